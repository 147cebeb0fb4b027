"""Independent oracle: training steps of the tiny GPT-2 computed with PyTorch autograd and torch.optim.AdamW.

Writes fixtures/train/ (next to adamw.json, which make_adamw_fixture.py makes):

  step.json                  the batches, losses, token counts and global gradient norms (see below)
  step-grads.safetensors     float32 gradients (HF names with "transformer.") of the "masked" case under
                             "masked/<name>" and of the "accumulation" case under "accumulation/<name>"
  step-adamw.safetensors     float32 weights after each AdamW step k (1-based) under "step<k>/<name>"

Starting weights: fixtures/models/tiny/model.safetensors (read back here), dropout off. The model is the
float64 reference forward pass of make_model_fixtures.py (HF GPT2LMHeadModel semantics, checked there
against a loop implementation) and the loss is HF's: logits of the whole record, shifted by one
(logits[:, :-1] against input_ids[:, 1:]), labels where the attention mask is 0 set to -100, and
F.cross_entropy(ignore_index=-100), i.e. the mean over the positions whose target is a real token.
Records are right-padded (the only padding the data pipeline writes) and the forward pass is given
the attention mask, as HF's would be; the script checks that without the mask the loss is the same.

Cases (every record is 9 tokens: 8 inputs and 8 targets after the shift):
  masked        one batch of 3 records, two of them padded (3 and 5 masked targets of 8): loss, count of
                real targets, gradients (before clipping) and their global norm.
  accumulation  2 micro-batches of 2 unpadded records, each micro-batch's loss divided by 2 and its
                gradient accumulated (the standard PyTorch loop); the script checks that this equals the
                gradient of the one batch of 4 records, and stores it.
  adamw         3 optimizer steps, each of 2 micro-batches of 2 records (padded ones among them, with
                different real-token counts per micro-batch), accumulated as above, then
                torch.nn.utils.clip_grad_norm_(max_norm=GRAD_CLIP) (active: every step's norm is above
                it, asserted) and torch.optim.AdamW with betas, weight_decay and grad_clip from
                configs/gpt2/run_gpt2.yaml and eps 1e-5 (not its 1e-8: see EPS), weight decay on the
                2-D parameters only (two param groups, as MindFormers and nanoGPT), foreach=False.
                Parameters are float64 during the run; the weights after each step are stored as
                float32. The same run in float32 (a stand-in for ours) is checked to stay well within
                the test's tolerances.

The script also plants each bug that issue 9 found the suite blind to (gradient accumulation keeping
only the last micro-batch; the loss averaging over masked positions too; AdamW's eps added before the
bias correction) in a copy of this reference and prints how far each moves the stored results, so the
test's tolerances can be set far below those distances (asserted here with the same tolerances).

Run by hand with Debian's python3-torch (torch 1.13):
    /usr/bin/python3 test/oracle/make_train_step_fixtures.py
Deterministic (fixed seeds, one thread). Tests read the outputs and never run Python.
"""
import json
import math
import pathlib
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_model_fixtures import forward, read_safetensors, write_safetensors  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/train"
MODEL = ROOT / "fixtures/models/tiny"

torch.set_num_threads(1)

# configs/gpt2/run_gpt2.yaml's optimizer (read and checked below), but for eps: see EPS.
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
CONFIG_EPS = 1e-8
# Adam moves an element by about lr·g/(|g| + eps). With the config's 1e-8 some elements are ill-conditioned
# for a float32 implementation checked against float64: the key bias (c_attn.bias[n_embd:2·n_embd]) has
# a zero gradient in exact arithmetic (softmax ignores a shift common to all keys; ~1e-18 here) and a
# float32 noise of ~1e-9 there, and a few other elements are ~1e-9 by chance; float noise over eps then
# moves them by a good part of lr, and those moves change the next steps' gradients by up to 0.5%
# (measured with a float32 run of this script). eps = 1e-5 bounds the effect of a gradient error δ to
# lr·δ/eps (1e-3 · 1e-9 / 1e-5 = 1e-7) and, being close to |g| of many elements, makes where eps enters
# the formula visible (the planted eps bug moves weights by ~1e-4).
EPS = 1e-5
LRS = [1e-3, 2e-3, 3e-3]
PAD = 319
LENGTH = 9

# Tolerances the test uses (test/train/step.test.ts explains them); checked here against the
# distance each planted bug makes.
LOSS_REL = 1e-5
GRAD_REL = 1e-4  # ‖ours − torch‖ / ‖torch‖ per tensor
WEIGHT_ABS = 1e-5


def check_config():
    text = (ROOT / "configs/gpt2/run_gpt2.yaml").read_text(encoding="utf-8")
    block = text.split("\noptimizer:\n", 1)[1].split("\n\n", 1)[0]
    opt = dict(line.strip().split(": ", 1) for line in block.split("\n"))
    assert json.loads(opt["betas"]) == list(BETAS) and float(opt["eps"]) == CONFIG_EPS, opt
    assert float(opt["weight_decay"]) == WEIGHT_DECAY and float(opt["grad_clip"]) == GRAD_CLIP, opt


def load_weights():
    cfg = json.loads((MODEL / "config.json").read_text(encoding="utf-8"))
    stored = read_safetensors(MODEL / "model.safetensors")
    w = OrderedDict((n[len("transformer."):], t) for n, t in stored.items())
    return cfg, w


def record(gen, vocab, real):
    """A record of LENGTH ids whose first `real` are real tokens and the rest PAD (mask 0)."""
    ids = torch.randint(0, vocab, (LENGTH,), generator=gen).tolist()
    ids[real:] = [PAD] * (LENGTH - real)
    return OrderedDict([("input_ids", ids), ("attention_mask", [1] * real + [0] * (LENGTH - real))])


def hf_loss(W, cfg, records, mean_over_all=False):
    """HF GPT2LMHeadModel's loss for right-padded records (labels = input_ids, -100 where masked)."""
    ids = [r["input_ids"] for r in records]
    mask = torch.tensor([r["attention_mask"] for r in records])
    logits = forward(W, cfg, ids, attention_mask=mask.tolist(), dtype=next(iter(W.values())).dtype)
    labels = torch.tensor(ids)
    labels = torch.where(mask == 1, labels, torch.full_like(labels, -100))
    shift_logits = logits[:, :-1].reshape(-1, cfg["vocab_size"])
    shift_labels = labels[:, 1:].reshape(-1)
    if mean_over_all:  # planted bug: the masked targets (their real ids, the PAD) counted in the mean
        return F.cross_entropy(shift_logits, torch.tensor(ids)[:, 1:].reshape(-1))
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


def leaves(w, dtype=torch.float64):
    return OrderedDict((n, t.to(dtype).clone().requires_grad_(True)) for n, t in w.items())


def grads_of(W):
    return OrderedDict((n, p.grad.detach().clone()) for n, p in W.items())


def global_norm(g):
    return float(torch.sqrt(sum((x ** 2).sum() for x in g.values())))


def accumulate(W, cfg, micro_batches, keep_last_only=False, mean_over_all=False):
    """Σ over micro-batches of ∇(loss_m / N), as loss.backward() per micro-batch; returns the mean loss."""
    for p in W.values():
        p.grad = None
    n = len(micro_batches)
    losses = []
    for k, mb in enumerate(micro_batches):
        if keep_last_only:  # planted bug: earlier micro-batches' gradients dropped
            for p in W.values():
                p.grad = None
        loss = hf_loss(W, cfg, mb, mean_over_all)
        (loss / n).backward()
        losses.append(float(loss))
    return sum(losses) / n


def finite_difference_check(w, cfg, records, grads):
    """A few gradient elements by central differences in float64 (autograd is the oracle; this checks its use)."""
    for name, index in (("wte.weight", (PAD, 3)), ("h.1.mlp.c_fc.weight", (5, 17)), ("h.0.ln_1.bias", (7,)), ("wpe.weight", (4, 0))):
        h = 1e-6
        vals = []
        for sign in (1, -1):
            W = OrderedDict((n, t.double().clone()) for n, t in w.items())
            W[name][index] += sign * h
            vals.append(float(hf_loss(W, cfg, records)))
        fd = (vals[0] - vals[1]) / (2 * h)
        assert abs(fd - float(grads[name][index])) < 1e-8, (name, fd, float(grads[name][index]))


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def adamw_run(w, cfg, steps, eps_before_correction=False, dtype=torch.float64):
    """The 3 steps with torch.optim.AdamW, or (planted bug) a hand AdamW whose eps is added before √(1 − β2^t)."""
    W = leaves(w, dtype)
    decay = [p for p in W.values() if p.dim() >= 2]
    no_decay = [p for p in W.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LRS[0], betas=BETAS, eps=EPS, foreach=False)
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in W.items()}
    results = []
    for t, step in enumerate(steps, start=1):
        loss = accumulate(W, cfg, step["micro_batches"])
        norm = float(torch.nn.utils.clip_grad_norm_(list(W.values()), GRAD_CLIP))
        clipped = grads_of(W)
        if not eps_before_correction:
            for group in opt.param_groups:
                group["lr"] = step["lr"]
            opt.step()
        else:
            with torch.no_grad():
                for n, p in W.items():
                    m, v = state[n]
                    if p.dim() >= 2:
                        p.mul_(1 - step["lr"] * WEIGHT_DECAY)
                    m.mul_(BETAS[0]).add_(p.grad, alpha=1 - BETAS[0])
                    v.mul_(BETAS[1]).addcmul_(p.grad, p.grad, value=1 - BETAS[1])
                    denom = (v.sqrt() + EPS) / math.sqrt(1 - BETAS[1] ** t)
                    p.addcdiv_(m, denom, value=-step["lr"] / (1 - BETAS[0] ** t))
        results.append((loss, norm, clipped, OrderedDict((n, p.detach().clone()) for n, p in W.items())))
    return results


def main():
    check_config()
    cfg, w = load_weights()
    V = cfg["vocab_size"]
    gen = torch.Generator().manual_seed(20240901)

    # masked
    masked = [record(gen, V, 9), record(gen, V, 6), record(gen, V, 4)]
    W = leaves(w)
    loss_m = hf_loss(W, cfg, masked)
    loss_m.backward()
    g_masked = grads_of(W)
    finite_difference_check(w, cfg, masked, g_masked)
    with torch.no_grad():
        unmasked_forward = F.cross_entropy(
            forward(W, cfg, [r["input_ids"] for r in masked])[:, :-1].reshape(-1, V),
            torch.tensor([[i if m else -100 for i, m in zip(r["input_ids"], r["attention_mask"])] for r in masked])[:, 1:].reshape(-1),
            ignore_index=-100)
    assert abs(float(unmasked_forward) - float(loss_m)) < 1e-12, "right padding must not need the attention mask"
    count = sum(sum(r["attention_mask"][1:]) for r in masked)
    bug_loss = float(hf_loss(leaves(w), cfg, masked, mean_over_all=True))
    print(f"masked: loss {float(loss_m):.6f} over {count} targets, grad norm {global_norm(g_masked):.4f}; "
          f"averaging over masked positions too: loss {bug_loss:.6f}")
    assert abs(bug_loss - float(loss_m)) / float(loss_m) > 100 * LOSS_REL

    # accumulation
    micro = [[record(gen, V, 9), record(gen, V, 9)], [record(gen, V, 9), record(gen, V, 9)]]
    W = leaves(w)
    loss_acc = accumulate(W, cfg, micro)
    g_acc = grads_of(W)
    W = leaves(w)
    loss_big = hf_loss(W, cfg, micro[0] + micro[1])
    loss_big.backward()
    g_big = grads_of(W)
    assert abs(loss_acc - float(loss_big)) < 1e-12
    assert max(rel_err(g_acc[n], g_big[n]) for n in g_acc) < 1e-12, "N micro-batches of B must equal one batch of N·B"
    W = leaves(w)
    accumulate(W, cfg, micro, keep_last_only=True)
    g_last = grads_of(W)
    worst = min(rel_err(g_last[n], g_acc[n]) for n in g_acc)
    print(f"accumulation: loss {loss_acc:.6f}, grad norm {global_norm(g_acc):.4f}; keeping only the last micro-batch: "
          f"smallest per-tensor relative gradient error {worst:.3f}")
    assert worst > 100 * GRAD_REL

    # adamw
    steps = []
    for lr, reals in zip(LRS, (([9, 7], [5, 9]), ([9, 9], [8, 3]), ([6, 9], [9, 9]))):
        steps.append(OrderedDict([("lr", lr), ("micro_batches", [[record(gen, V, r) for r in pair] for pair in reals])]))
    good = adamw_run(w, cfg, steps)
    def distance(a, b):
        return max(float((a[n].double() - b[n].double()).abs().max()) for n in w)

    f32 = adamw_run(w, cfg, steps, dtype=torch.float32)
    bad = adamw_run(w, cfg, steps, eps_before_correction=True)
    for k, (run, proxy, wrong) in enumerate(zip(good, f32, bad), start=1):
        loss, norm, _, after = run
        assert norm > GRAD_CLIP, f"step {k}: clipping inactive (norm {norm})"
        steps[k - 1]["loss"] = loss
        steps[k - 1]["grad_norm"] = norm
        steps[k - 1]["tokens"] = sum(sum(r["attention_mask"][1:]) for mb in steps[k - 1]["micro_batches"] for r in mb)
        noise, moved = distance(after, proxy[3]), distance(after, wrong[3])
        print(f"adamw step {k}: lr {LRS[k - 1]:g}, loss {loss:.6f} (float32 run {proxy[0] - loss:+.1e}), pre-clip norm {norm:.4f}; "
              f"weights: float32 run within {noise:.1e}, eps before the bias correction moves one by {moved:.1e}")
        assert 5 * noise < WEIGHT_ABS < moved / 5
        assert abs(proxy[0] - loss) / loss < LOSS_REL / 5

    OUT.mkdir(parents=True, exist_ok=True)
    prefixed = lambda tag, g: [(f"{tag}/transformer.{n}", t.to(torch.float32)) for n, t in g.items()]  # noqa: E731
    write_safetensors(OUT / "step-grads.safetensors", prefixed("masked", g_masked) + prefixed("accumulation", g_acc))
    write_safetensors(OUT / "step-adamw.safetensors", [x for k, run in enumerate(good, start=1) for x in prefixed(f"step{k}", run[3])])
    fixture = OrderedDict([
        ("about", "training steps of fixtures/models/tiny (dropout off) by PyTorch autograd + torch.optim.AdamW; "
                  "made by test/oracle/make_train_step_fixtures.py"),
        ("torch_version", torch.__version__),
        ("model", "fixtures/models/tiny"),
        ("pad_id", PAD),
        ("masked", OrderedDict([("records", masked), ("loss", float(loss_m)), ("tokens", count),
                                ("grad_norm", global_norm(g_masked)), ("grads", "step-grads.safetensors: masked/<name>")])),
        ("accumulation", OrderedDict([("micro_batches", micro), ("loss", loss_acc), ("grad_norm", global_norm(g_acc)),
                                      ("grads", "step-grads.safetensors: accumulation/<name>")])),
        ("adamw", OrderedDict([("betas", list(BETAS)), ("eps", EPS), ("weight_decay", WEIGHT_DECAY), ("grad_clip", GRAD_CLIP),
                               ("weights", "step-adamw.safetensors: step<k>/<name>, after step k"),
                               ("steps", steps)])),
    ])
    (OUT / "step.json").write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    print("wrote", ", ".join(f"{p.name} ({p.stat().st_size} bytes)" for p in sorted(OUT.glob("step*"))))


if __name__ == "__main__":
    main()
