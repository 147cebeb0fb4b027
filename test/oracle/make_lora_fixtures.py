"""Independent oracle: LoRA on the tiny GPT-2 fixture, computed in PyTorch from PEFT's definition.

PEFT is not installed here; the math follows its source (peft/tuners/lora/layer.py, checked by hand):
a targeted Conv1D W [in, out] gets lora_A = nn.Linear(in, r) (weight [r, in]) and lora_B = nn.Linear(r, out)
(weight [out, r]); forward adds lora_B(lora_A(dropout(x))) * scaling with scaling = lora_alpha / r
(lora_alpha / sqrt(r) with use_rslora); merging adds transpose(B @ A) * scaling to W (fan_in_fan_out, which
PEFT forces for Conv1D), computed in the weights' float32. Saved names drop the adapter name:
base_model.model.transformer.h.<i>.<module>.lora_A.weight / .lora_B.weight. rank_pattern / alpha_pattern
give a module its own r / alpha (key k matches a module name by (.*\\.)?(k)$).

Our adapters adapt column slices of the fused attn.c_attn (query, key, value) separately; their A and B are
stored here in our layout, A [in, r] = lora_A.weight^T and B [r, slice width] = lora_B.weight^T of that
slice, under our names h.<i>.<target>.lora_A / .lora_B.

Writes fixtures/lora/:
  qv.safetensors        query + value adapters (rank 4, alpha 8), A ~ U(+-1/sqrt(in)) as PEFT's
                        kaiming_uniform_(a=sqrt(5)), B ~ N(0, 0.2) (nonzero, so the adapter matters)
  all.safetensors       every target (query, key, value, attn_proj, mlp_fc, mlp_proj), rank 2, alpha 3
  expected.json         tiny/expected.json's ids; for qv and all: rank, alpha, targets, the unmerged
                        forward's logits [2][8][320] (float64 reference, stored as float32), and for qv the
                        left-padded batch of tiny/expected.json with its logits
  merged-qv.safetensors, merged-all.safetensors
                        every weight the adapter changes, merged as PEFT merges (float32), HF names
  peft-qv/, peft-all/   adapter_config.json + adapter_model.safetensors as PEFT saves the equivalent
                        adapter: the slices on attn.c_attn as one adapter of rank (number of slices) * r,
                        lora_A the slices' A^T stacked, lora_B each slice's B^T in its rows and rank
                        columns, alpha * (number of slices); peft-all has c_attn at rank 6 beside rank-2
                        modules: r 2, lora_alpha 3, rank_pattern {attn.c_attn: 6}, alpha_pattern {attn.c_attn: 9}
  foreign/              a PEFT adapter as written elsewhere: target_modules ["c_attn", "c_proj"] (c_proj
                        matches attn.c_proj and mlp.c_proj), r 4, lora_alpha 6, use_rslora,
                        rank_pattern {"mlp.c_proj": 2}, random A and B; and merged.safetensors (float32)
  greedy.json           greedy continuations of the qv model (unmerged, float64) for tiny's greedy prompts
  train.json, train.safetensors
                        3 AdamW steps on the qv adapter's A and B only (base frozen, no dropout) from
                        PEFT's initialisation (A uniform as above, B = 0), stored under init/<name>;
                        each step 2 micro-batches of 2 records (right-padded), the loss mean over real
                        targets (HF's shift, -100 on padding), gradients accumulated as loss/2, global-norm
                        clipping at GRAD_CLIP (0.5: active on steps 2 and 3) over A and B, torch.optim.AdamW
                        (betas, eps, weight decay from configs/gpt2/run_gpt2.yaml) on every A and B. Stored: per step the
                        loss, the gradient norm before clipping, the weights after it (step<k>/<name>),
                        and step 1's and step 2's clipped gradients (grad<k>/<name>). Not yet used by a
                        test: for the LoRA training wiring.

Run by hand with Debian's python3-torch (torch 1.13):
    /usr/bin/python3 test/oracle/make_lora_fixtures.py
Deterministic (fixed seeds, one thread). Tests read the outputs and never run Python.
"""
import json
import math
import pathlib
import shutil
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_model_fixtures import (GREEDY_PROMPTS, GREEDY_STEPS, GREEDY_MIN_GAP, IDS, PADDED_IDS, PADDED_MASK,  # noqa: E402
                                 PADDED_POS, forward, read_safetensors, write_json, write_safetensors)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/lora"
MODEL = ROOT / "fixtures/models/tiny"
torch.set_num_threads(1)

TARGETS = ["query", "key", "value", "attn_proj", "mlp_fc", "mlp_proj"]
MODULE = {"query": "attn.c_attn", "key": "attn.c_attn", "value": "attn.c_attn", "attn_proj": "attn.c_proj",
          "mlp_fc": "mlp.c_fc", "mlp_proj": "mlp.c_proj"}

# The training case: configs/gpt2/run_gpt2.yaml's AdamW (betas, eps, weight decay), but a clipping norm of 0.5
# rather than its 1.0, so that clipping is active on steps 2 and 3 and not on step 1 (asserted). The config's
# eps (1e-8) is kept: unlike full fine-tuning (make_train_step_fixtures.py), the same run in float32 stays
# within 1e-7 of the float64 one here (asserted).
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1
GRAD_CLIP = 0.5
EPS = 1e-8
LRS = [1e-3, 2e-3, 3e-3]
PAD = 319
LENGTH = 9


def load_tiny():
    cfg = json.loads((MODEL / "config.json").read_text(encoding="utf-8"))
    stored = read_safetensors(MODEL / "model.safetensors")
    return cfg, OrderedDict((n[len("transformer."):], t) for n, t in stored.items())


def site(cfg, target):
    """(module, in, module out, column offset, width) of a target."""
    D, inner = cfg["n_embd"], cfg["n_inner"] or 4 * cfg["n_embd"]
    return {"query": ("attn.c_attn", D, 3 * D, 0, D), "key": ("attn.c_attn", D, 3 * D, D, D),
            "value": ("attn.c_attn", D, 3 * D, 2 * D, D), "attn_proj": ("attn.c_proj", D, D, 0, D),
            "mlp_fc": ("mlp.c_fc", D, inner, 0, inner), "mlp_proj": ("mlp.c_proj", inner, D, 0, D)}[target]


def make_adapter(cfg, targets, rank, seed, b_std):
    """Our layout: A [in, r] uniform as PEFT's init, B [r, width] ~ N(0, b_std) (0: PEFT's zeros)."""
    g = torch.Generator().manual_seed(seed)
    ad = OrderedDict()
    for i in range(cfg["n_layer"]):
        for t in [x for x in TARGETS if x in targets]:
            _, fan_in, _, _, width = site(cfg, t)
            bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) of a [r, in] weight
            ad[f"h.{i}.{t}.lora_A"] = ((torch.rand((fan_in, rank), generator=g, dtype=torch.float32) * 2 - 1) * bound).contiguous()
            ad[f"h.{i}.{t}.lora_B"] = (torch.randn((rank, width), generator=g, dtype=torch.float32) * b_std).contiguous()
    return ad


def lora_forward(w, cfg, ids, ad, targets, scale, attention_mask=None, position_ids=None, dtype=torch.float64):
    """The reference forward with each targeted Conv1D's output plus scale * (x @ A) @ B in the target's
    columns (eval mode: no dropout), computed unmerged: the merged weights are checked against it."""
    A = {k: v.to(dtype) for k, v in ad.items()}

    def delta(i, module, x):
        out = None
        for t in targets:
            m, _, width_all, off, width = site(cfg, t)
            if m == module:
                out = x.new_zeros(x.shape[:-1] + (width_all,)) if out is None else out
                out[..., off:off + width] += scale * ((x @ A[f"h.{i}.{t}.lora_A"]) @ A[f"h.{i}.{t}.lora_B"])
        return 0 if out is None else out

    return forward(w, cfg, ids, attention_mask=attention_mask, position_ids=position_ids, dtype=dtype, delta=delta)


# ------------------------------------------------------------------------------------------- PEFT side

def peft_export(cfg, ad, targets, rank, alpha):
    """The tensors and config PEFT saves for the equivalent adapter (slices of c_attn fused)."""
    modules = OrderedDict()
    for t in [x for x in TARGETS if x in targets]:
        modules.setdefault(MODULE[t], []).append(t)
    tensors = []
    for i in range(cfg["n_layer"]):
        for module, ts in modules.items():
            _, fan_in, out, _, _ = site(cfg, ts[0])
            R = len(ts) * rank
            A = torch.zeros((R, fan_in), dtype=torch.float32)
            Bm = torch.zeros((out, R), dtype=torch.float32)
            for s, t in enumerate(ts):
                _, _, _, off, width = site(cfg, t)
                A[s * rank:(s + 1) * rank] = ad[f"h.{i}.{t}.lora_A"].t()
                Bm[off:off + width, s * rank:(s + 1) * rank] = ad[f"h.{i}.{t}.lora_B"].t()
            pre = f"base_model.model.transformer.h.{i}.{module}."
            tensors += [(pre + "lora_A.weight", A.contiguous()), (pre + "lora_B.weight", Bm.contiguous())]
    ranks = {m: len(ts) * rank for m, ts in modules.items()}
    uniform = len(set(ranks.values())) == 1
    r = next(iter(ranks.values())) if uniform else rank
    fused = {} if uniform else {m: len(ts) for m, ts in modules.items() if len(ts) > 1}
    config = OrderedDict([
        ("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("r", r), ("lora_alpha", alpha * r / rank),
        ("target_modules", list(modules)), ("fan_in_fan_out", True), ("bias", "none"),
        ("rank_pattern", {m: n * rank for m, n in fused.items()}),
        ("alpha_pattern", {m: n * alpha for m, n in fused.items()}),
    ])
    return tensors, config


def pattern_value(pattern, name, default):
    import re
    for k, v in pattern.items():
        if re.match(rf"(.*\.)?({k})$", name):
            return v
    return default


def peft_merge(w, cfg, tensors, config):
    """PEFT's merge_and_unload: W += transpose(B @ A) * scaling, in float32. Returns the changed weights."""
    by = dict(tensors)
    merged = OrderedDict()
    for name in by:
        if not name.endswith("lora_A.weight"):
            continue
        module = name[len("base_model.model.transformer."):-len(".lora_A.weight")]
        A, Bm = by[name], by[name.replace("lora_A", "lora_B")]
        r = pattern_value(config.get("rank_pattern", {}), "transformer." + module, config["r"])
        alpha = pattern_value(config.get("alpha_pattern", {}), "transformer." + module, config["lora_alpha"])
        assert A.shape[0] == r
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        W = merged.get(module + ".weight", w[module + ".weight"]).clone()
        W += (Bm @ A).t() * scaling
        merged[module + ".weight"] = W
    return merged


def check_merge(w, cfg, merged, ad, targets, scale, tag):
    """The merged float32 weights run (float64) as the unmerged adapter does, and differ from a float64
    merge by float32 rounding only."""
    wm = OrderedDict((n, merged.get(n, t)) for n, t in w.items())
    un = lora_forward(w, cfg, IDS, ad, targets, scale)
    diff = float((forward(wm, cfg, IDS) - un).abs().max())
    assert diff < 1e-5, (tag, diff)
    for n, t in merged.items():
        i, module = n.split(".")[1], ".".join(n.split(".")[2:4])
        exact = w[n].double().clone()
        for tt in targets:
            m, _, _, off, width = site(cfg, tt)
            if m == module:
                exact[:, off:off + width] += scale * (ad[f"h.{i}.{tt}.lora_A"].double() @ ad[f"h.{i}.{tt}.lora_B"].double())
        assert float((t.double() - exact).abs().max()) < 1e-6, (tag, n)
    print(f"  {tag}: merged (float32, as PEFT) vs unmerged logits max diff {diff:.2e}")


def write_peft_dir(d, tensors, config):
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_safetensors(d / "adapter_model.safetensors", tensors)


# ---------------------------------------------------------------------------------------------- training

def record(gen, vocab, real):
    ids = torch.randint(0, vocab, (LENGTH,), generator=gen).tolist()
    ids[real:] = [PAD] * (LENGTH - real)
    return OrderedDict([("input_ids", ids), ("attention_mask", [1] * real + [0] * (LENGTH - real))])


def lora_loss(w, cfg, ad, targets, scale, records):
    ids = [r["input_ids"] for r in records]
    mask = torch.tensor([r["attention_mask"] for r in records])
    dtype = next(iter(ad.values())).dtype
    logits = lora_forward(w, cfg, ids, ad, targets, scale, attention_mask=mask.tolist(), dtype=dtype)
    labels = torch.where(mask == 1, torch.tensor(ids), torch.full_like(mask, -100))
    return F.cross_entropy(logits[:, :-1].reshape(-1, cfg["vocab_size"]), labels[:, 1:].reshape(-1), ignore_index=-100)


def train(w, cfg, init, targets, scale, steps, dtype=torch.float64):
    ad = OrderedDict((n, t.to(dtype).clone().requires_grad_(True)) for n, t in init.items())
    base = OrderedDict((n, t.to(dtype)) for n, t in w.items())  # frozen: plain tensors, no gradients
    opt = torch.optim.AdamW(list(ad.values()), lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, foreach=False)
    results = []
    for step in steps:
        for p in ad.values():
            p.grad = None
        losses = []
        for mb in step["micro_batches"]:
            loss = lora_loss(base, cfg, ad, targets, scale, mb)
            (loss / len(step["micro_batches"])).backward()
            losses.append(float(loss))
        norm = float(torch.nn.utils.clip_grad_norm_(list(ad.values()), GRAD_CLIP))
        grads = OrderedDict((n, p.grad.detach().clone()) for n, p in ad.items())
        for group in opt.param_groups:
            group["lr"] = step["lr"]
        opt.step()
        results.append((sum(losses) / len(losses), norm, grads, OrderedDict((n, p.detach().clone()) for n, p in ad.items())))
    assert all(torch.equal(base[n], w[n].to(dtype)) for n in w)
    return results


# ------------------------------------------------------------------------------------------------- main

def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    cfg, w = load_tiny()
    expected = OrderedDict([("ids", IDS)])

    cases = {"qv": (["query", "value"], 4, 8.0, 20240701), "all": (TARGETS, 2, 3.0, 20240702)}
    adapters = {}
    for tag, (targets, rank, alpha, seed) in cases.items():
        ad = make_adapter(cfg, targets, rank, seed, 0.2)
        adapters[tag] = ad
        scale = alpha / rank
        write_safetensors(OUT / f"{tag}.safetensors", list(ad.items()))
        logits = lora_forward(w, cfg, IDS, ad, targets, scale)
        base = forward(w, cfg, IDS)
        print(f"  {tag}: max|logits - base logits| {float((logits - base).abs().max()):.3f}")
        assert float((logits - base).abs().max()) > 0.1  # the adapter changes the model visibly
        entry = OrderedDict([("rank", rank), ("alpha", alpha), ("targets", targets), ("logits", logits.to(torch.float32).numpy())])
        if tag == "qv":
            padded = lora_forward(w, cfg, PADDED_IDS, ad, targets, scale, attention_mask=PADDED_MASK, position_ids=PADDED_POS)
            alone = lora_forward(w, cfg, [PADDED_IDS[0][3:]], ad, targets, scale)
            assert torch.allclose(padded[0, 3:], alone[0], rtol=0, atol=1e-10)
            entry["padded"] = OrderedDict([("ids", PADDED_IDS), ("attention_mask", PADDED_MASK), ("position_ids", PADDED_POS),
                                           ("logits", padded.to(torch.float32).numpy())])
        expected[tag] = entry
        tensors, config = peft_export(cfg, ad, targets, rank, alpha)
        write_peft_dir(OUT / f"peft-{tag}", tensors, config)
        merged = peft_merge(w, cfg, tensors, config)
        check_merge(w, cfg, merged, ad, targets, scale, tag)
        write_safetensors(OUT / f"merged-{tag}.safetensors", [("transformer." + n, t) for n, t in merged.items()])
    write_json(OUT / "expected.json", expected)

    # foreign/: a PEFT adapter from elsewhere (c_proj matches both attn.c_proj and mlp.c_proj)
    g = torch.Generator().manual_seed(20240703)
    D, inner = cfg["n_embd"], 4 * cfg["n_embd"]
    config = OrderedDict([("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("base_model_name_or_path", "gpt2"),
                          ("r", 4), ("lora_alpha", 6), ("lora_dropout", 0.05), ("target_modules", ["c_attn", "c_proj"]),
                          ("fan_in_fan_out", True), ("bias", "none"), ("use_rslora", True),
                          ("rank_pattern", {"mlp.c_proj": 2}), ("alpha_pattern", {})])
    tensors = []
    for i in range(cfg["n_layer"]):
        for module, fan_in, out in (("attn.c_attn", D, 3 * D), ("attn.c_proj", D, D), ("mlp.c_proj", inner, D)):
            r = 2 if module == "mlp.c_proj" else 4
            pre = f"base_model.model.transformer.h.{i}.{module}."
            tensors += [(pre + "lora_A.weight", torch.randn((r, fan_in), generator=g) * 0.2),
                        (pre + "lora_B.weight", torch.randn((out, r), generator=g) * 0.2)]
    write_peft_dir(OUT / "foreign", tensors, config)
    merged = peft_merge(w, cfg, tensors, config)
    assert math.isclose(6 / math.sqrt(2), 4.242640687119285)  # mlp.c_proj's scaling: rank 2, rslora
    write_safetensors(OUT / "foreign/merged.safetensors", [("transformer." + n, t) for n, t in merged.items()])

    # greedy.json: the qv model, unmerged, float64
    targets, rank, alpha, _ = cases["qv"]
    ad = adapters["qv"]
    continuations, gaps = [], []
    for prompt in GREEDY_PROMPTS:
        seq = list(prompt)
        for _ in range(GREEDY_STEPS):
            last = lora_forward(w, cfg, [seq], ad, targets, alpha / rank)[0, -1]
            top2 = torch.topk(last, 2).values
            gaps.append(float(top2[0] - top2[1]))
            seq.append(int(torch.argmax(last)))
        continuations.append(seq[len(prompt):])
    assert min(gaps) >= GREEDY_MIN_GAP, min(gaps)
    print(f"  greedy (qv): {continuations}, min top-2 gap {min(gaps):.4g}")
    write_json(OUT / "greedy.json", OrderedDict([("prompts", GREEDY_PROMPTS), ("continuations", continuations), ("min_top2_gap", min(gaps))]))

    # training: PEFT's init (B = 0) for the qv adapter's shape
    init = make_adapter(cfg, targets, rank, 20240704, 0.0)
    assert all(float(t.abs().max()) == 0 for n, t in init.items() if n.endswith("lora_B"))
    gen = torch.Generator().manual_seed(20240705)
    V = cfg["vocab_size"]
    reals = [[[9, 6], [4, 9]], [[9, 9], [7, 5]], [[3, 9], [9, 8]]]
    steps = [OrderedDict([("lr", LRS[k]), ("micro_batches", [[record(gen, V, n) for n in mb] for mb in reals[k]])]) for k in range(3)]
    results = train(w, cfg, init, targets, alpha / rank, steps)
    f32 = train(w, cfg, init, targets, alpha / rank, steps, dtype=torch.float32)
    worst = max(float((a[3][n].double() - b[3][n].double()).abs().max()) for a, b in zip(results, f32) for n in init)
    print(f"  train: losses {[round(r[0], 6) for r in results]}, norms {[round(r[1], 4) for r in results]}, "
          f"float32 run's weights within {worst:.2e}")
    assert worst < 1e-7
    assert [r[1] > GRAD_CLIP for r in results] == [False, True, True]
    assert float(results[0][2]["h.0.query.lora_A"].abs().max()) == 0  # B = 0: no gradient for A at step 1
    tensors = [(f"init/{n}", t) for n, t in init.items()]
    for k, (_, _, grads, weights) in enumerate(results, start=1):
        tensors += [(f"step{k}/{n}", t.to(torch.float32)) for n, t in weights.items()]
        if k <= 2:
            tensors += [(f"grad{k}/{n}", t.to(torch.float32)) for n, t in grads.items()]
    write_safetensors(OUT / "train.safetensors", tensors)
    (OUT / "train.json").write_text(json.dumps(OrderedDict([
        ("targets", targets), ("rank", rank), ("alpha", alpha), ("dropout", 0.0),
        ("optimizer", OrderedDict([("betas", list(BETAS)), ("eps", EPS), ("weight_decay", WEIGHT_DECAY), ("grad_clip", GRAD_CLIP)])),
        ("steps", steps),
        ("losses", [r[0] for r in results]), ("grad_norms", [r[1] for r in results]),
    ]), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
