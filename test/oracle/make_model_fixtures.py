"""Independent oracle: GPT-2 model fixtures computed with PyTorch (Hugging Face GPT2LMHeadModel semantics).

Writes fixtures/models/ (everything but its README.md):

  tiny/            config.json, model.safetensors (F32, "transformer." names), pytorch_model.bin (zip format,
                   full HF state dict: attention buffers, tied lm_head.weight), mindformers.safetensors (the
                   same weights under MindFormers' names), expected.json (logits, padded batch, loss),
                   greedy.json (see below)
  tiny-legacy/     the same weights: config.json, pytorch_model.bin in torch's legacy (pre-1.6, non-zip)
                   format, names without the prefix as in OpenAI's converted `gpt2` checkpoint, buffers
                   included, no lm_head
  tiny-noprefix/   the same weights: config.json, model.safetensors without the prefix, with the attention
                   buffers as F32 tensors and lm_head.weight
  tiny-f16/        the same weights rounded to F16 / BF16: config.json, model.safetensors, and an
  tiny-bf16/         expected.json computed from the rounded weights
  tiny-gelu/       new random models with activation_function "gelu" / "fast_gelu":
  tiny-fastgelu/     config.json, model.safetensors, expected.json, greedy.json
  tiny-ninner/     a new random model with n_inner 52 (MLP width; HF's default is 4 x n_embd = 128):
                   config.json, model.safetensors, expected.json, greedy.json
  tiny-strided/    config.json, pytorch_model.bin (zip) with the tiny weights where layer 0's c_attn.weight is a
                   transposed (non-contiguous) view and wpe a slice with a storage offset; tiny's expected.json
  gpt2vocab/       vocab 50257, 8-wide, 2 layers: config.json, model.safetensors, eval.json (three 65-token blocks
                   of real GPT-2 ids and their mean next-token loss / perplexity)

The reference forward pass is written here in plain torch (transformers and safetensors are not used; the
safetensors writer is below) and runs in float64 on the float32 (or rounded) weights; expected logits are
then stored as float32. A second, loop-based NumPy implementation checks the torch one before anything is
written. Deterministic: fixed seeds, one thread, deterministic pickle storage keys in the legacy format.

greedy.json (tiny, tiny-gelu, tiny-fastgelu, tiny-ninner): for each of GREEDY_PROMPTS (one prompt at a time, batch 1),
GREEDY_STEPS new tokens, each the argmax (lowest id on ties, as torch.argmax) of the last position's float64
logits, recomputing the whole context every step (no cache), no EOS stopping. It stores the prompts, the
continuations (new ids only), the float32-rounded last-position logits of every step of the first prompt
([GREEDY_STEPS][vocab]) and min_top2_gap, the smallest float64 gap between the largest and second-largest
logit over every step of every prompt (asserted >= 1e-3, so greedy is well-conditioned). The weights are
the float32 ones stored in the directory's model.safetensors (read back and compared before use), and the
continuations are re-checked with the loop-based NumPy implementation.

Run by hand with Debian's python3-torch (torch 1.13) and python3-regex:
    /usr/bin/python3 test/oracle/make_model_fixtures.py
The outputs are committed; the tests compare with them and never run Python.
"""
import inspect
import json
import math
import pathlib
import pickle
import shutil
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/models"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

assert sys.byteorder == "little"
torch.set_num_threads(1)
F32_MIN = float(torch.finfo(torch.float32).min)

# ----------------------------------------------------------------------------------------------- config


def make_config(vocab_size, n_positions, n_embd, n_layer, n_head, activation_function, n_inner=None):
    return OrderedDict([
        ("model_type", "gpt2"),
        ("architectures", ["GPT2LMHeadModel"]),
        ("vocab_size", vocab_size),
        ("n_positions", n_positions),
        ("n_embd", n_embd),
        ("n_layer", n_layer),
        ("n_head", n_head),
        ("n_inner", n_inner),
        ("activation_function", activation_function),
        ("resid_pdrop", 0.1),
        ("embd_pdrop", 0.1),
        ("attn_pdrop", 0.1),
        ("layer_norm_epsilon", 1e-05),
        ("initializer_range", 0.02),
        ("bos_token_id", 50256),
        ("eos_token_id", 50256),
        ("n_ctx", n_positions),
    ])


def layer_names(i):
    p = f"h.{i}."
    return [p + "ln_1.weight", p + "ln_1.bias", p + "attn.c_attn.weight", p + "attn.c_attn.bias",
            p + "attn.c_proj.weight", p + "attn.c_proj.bias", p + "ln_2.weight", p + "ln_2.bias",
            p + "mlp.c_fc.weight", p + "mlp.c_fc.bias", p + "mlp.c_proj.weight", p + "mlp.c_proj.bias"]


def init_weights(cfg, seed):
    """Random float32 weights, HF names without the prefix, in HF parameter order."""
    g = torch.Generator().manual_seed(seed)
    V, P, D, L = cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"]
    inner = cfg["n_inner"] or 4 * D

    def normal(shape, std, mean=0.0):
        return (torch.randn(shape, generator=g, dtype=torch.float32) * std + mean).contiguous()

    w = OrderedDict()
    w["wte.weight"] = normal((V, D), 0.2)
    w["wpe.weight"] = normal((P, D), 0.1)
    for i in range(L):
        p = f"h.{i}."
        w[p + "ln_1.weight"] = normal((D,), 0.1, 1.0)
        w[p + "ln_1.bias"] = normal((D,), 0.1)
        w[p + "attn.c_attn.weight"] = normal((D, 3 * D), 0.2)
        w[p + "attn.c_attn.bias"] = normal((3 * D,), 0.1)
        w[p + "attn.c_proj.weight"] = normal((D, D), 0.2)
        w[p + "attn.c_proj.bias"] = normal((D,), 0.1)
        w[p + "ln_2.weight"] = normal((D,), 0.1, 1.0)
        w[p + "ln_2.bias"] = normal((D,), 0.1)
        w[p + "mlp.c_fc.weight"] = normal((D, inner), 0.2)
        w[p + "mlp.c_fc.bias"] = normal((inner,), 0.1)
        w[p + "mlp.c_proj.weight"] = normal((inner, D), 0.2)
        w[p + "mlp.c_proj.bias"] = normal((D,), 0.1)
    w["ln_f.weight"] = normal((D,), 0.1, 1.0)
    w["ln_f.bias"] = normal((D,), 0.1)
    return w


# ------------------------------------------------------------------------------------ reference forward

def act_fn(name):
    if name == "gelu_new":
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if name == "gelu":
        return lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "fast_gelu":  # MindSpore FastGelu = x * sigmoid(1.702 x) (HF calls this "quick_gelu")
        return lambda x: x * torch.sigmoid(1.702 * x)
    raise ValueError(name)


def layer_norm(x, g, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * g + b


def forward(w, cfg, ids, attention_mask=None, position_ids=None, dtype=torch.float64, hidden=False, delta=None):
    """HF GPT2LMHeadModel.forward in eval mode, computed in `dtype`. Returns logits [B, T, V] (with `hidden`: the final
    hidden states after ln_f [B, T, D], what GPT2Model returns). `delta(i, module, x)`, when given, is added to the
    output of block i's Conv1D `module` ("attn.c_attn", …) for its input x (an unmerged LoRA: make_lora_fixtures.py)."""
    W = {k: v.to(dtype) for k, v in w.items()}
    D, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = D // H
    act = act_fn(cfg["activation_function"])
    ids = torch.tensor(ids, dtype=torch.long)
    B, T = ids.shape
    pos = torch.arange(T).expand(B, T) if position_ids is None else torch.tensor(position_ids, dtype=torch.long)
    h = W["wte.weight"][ids] + W["wpe.weight"][pos]
    causal = torch.tril(torch.ones((T, T), dtype=torch.bool)).view(1, 1, T, T)
    minv = torch.tensor(F32_MIN, dtype=dtype)
    ext = None
    if attention_mask is not None:
        m = torch.tensor(attention_mask, dtype=dtype)[:, None, None, :]
        ext = (1.0 - m) * F32_MIN

    def heads(x):
        return x.view(B, T, H, hd).permute(0, 2, 1, 3)

    def conv1d(x, i, module):
        y = x @ W[f"h.{i}.{module}.weight"] + W[f"h.{i}.{module}.bias"]
        return y if delta is None else y + delta(i, module, x)

    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        a = layer_norm(h, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = conv1d(a, i, "attn.c_attn")
        q, k, v = (heads(x) for x in qkv.split(D, dim=-1))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = torch.where(causal, s, minv)
        if ext is not None:
            s = s + ext
        probs = torch.softmax(s, dim=-1)
        o = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, D)
        h = h + conv1d(o, i, "attn.c_proj")
        m = layer_norm(h, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = conv1d(act(conv1d(m, i, "mlp.c_fc")), i, "mlp.c_proj")
        h = h + m
    h = layer_norm(h, W["ln_f.weight"], W["ln_f.bias"], eps)
    return h if hidden else h @ W["wte.weight"].t()


def naive_forward(w, cfg, ids):
    """Second implementation for self-checking: NumPy float64, explicit loops over rows, heads and keys."""
    W = {k: v.double().numpy() for k, v in w.items()}
    D, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = D // H
    a_name = cfg["activation_function"]

    def act(x):
        if a_name == "gelu_new":
            return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
        if a_name == "gelu":
            return np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in x])
        return x / (1 + np.exp(-1.702 * x))

    def ln(x, g, b):
        mu = sum(x) / len(x)
        var = sum((t - mu) ** 2 for t in x) / len(x)
        return (x - mu) / math.sqrt(var + eps) * g + b

    out = []
    for row in ids:
        T = len(row)
        hs = [W["wte.weight"][t] + W["wpe.weight"][j] for j, t in enumerate(row)]
        for i in range(cfg["n_layer"]):
            p = f"h.{i}."
            qkv = [ln(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"]) @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"] for x in hs]
            att = []
            for t in range(T):
                o = np.zeros(D)
                for hh in range(H):
                    sl = slice(hh * hd, (hh + 1) * hd)
                    q = qkv[t][:D][sl]
                    sc = [float(q @ qkv[j][D:2 * D][sl]) / math.sqrt(hd) for j in range(t + 1)]
                    mx = max(sc)
                    e = [math.exp(x - mx) for x in sc]
                    z = sum(e)
                    o[sl] = sum((e[j] / z) * qkv[j][2 * D:][sl] for j in range(t + 1))
                att.append(o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"])
            hs = [x + a for x, a in zip(hs, att)]
            hs = [x + act(ln(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"]) @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
                  @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"] for x in hs]
        out.append([ln(x, W["ln_f.weight"], W["ln_f.bias"]) @ W["wte.weight"].T for x in hs])
    return np.array(out)


def mean_ce(logits, labels):
    """Token-weighted mean cross-entropy in float64. logits [N, V] float64, labels [N]."""
    labels = torch.tensor(labels, dtype=torch.long)
    lse = torch.logsumexp(logits, dim=-1)
    return float((lse - logits.gather(-1, labels[:, None])[:, 0]).mean())


# --------------------------------------------------------------------------------------------- writers

def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors(path, tensors, data_order=None):
    """tensors: list of (name, tensor). Header keys in list order ("__metadata__" first); data packed in
    `data_order` (a list of names, default: the same order) with no gaps."""
    data_order = data_order or [n for n, _ in tensors]
    by_name = dict(tensors)
    assert len(by_name) == len(tensors) and sorted(data_order) == sorted(by_name)
    offsets, blobs, off = {}, [], 0
    for n in data_order:
        b = tensor_bytes(by_name[n])
        offsets[n] = [off, off + len(b)]
        blobs.append(b)
        off += len(b)
    header = OrderedDict([("__metadata__", {"format": "pt"})])
    for n, t in tensors:
        header[n] = OrderedDict([("dtype", ST_DTYPES[t.dtype]), ("shape", list(t.shape)), ("data_offsets", offsets[n])])
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    path.write_bytes(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


def read_safetensors(path):
    """Minimal reader, used only to verify what was written."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    np_types = {"F32": np.float32, "F16": np.float16, "BF16": np.int16}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=np_types[info["dtype"]]).copy()
        t = torch.from_numpy(a)
        if info["dtype"] == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(info["shape"])
    return out


def _deterministic_legacy_save():
    """torch 1.13's legacy serializer names storages by their memory address (str(storage._cdata)), which
    differs between runs. This copy of it names them "0", "1", ... in order of first use instead (the zip
    format's rule), so the file is reproducible. The raw storages are still written in sorted-key order
    ("0", "1", "10", "11", ..., "2", ...), which differs from first-use order, as address keys do."""
    src = inspect.getsource(torch.serialization._legacy_save)
    old = "storage_key = str(storage._cdata)"
    assert src.count(old) == 1, "torch.serialization._legacy_save changed; update the patch"
    src = src.replace(old, "storage_key = _DET_KEYS.setdefault(storage._cdata, str(len(_DET_KEYS)))")
    ns = dict(torch.serialization.__dict__)
    exec(compile(src, "<deterministic _legacy_save>", "exec"), ns)

    def save(obj, path):
        ns["_DET_KEYS"] = {}
        with open(path, "wb") as f:
            ns["_legacy_save"](obj, f, pickle, torch.serialization.DEFAULT_PROTOCOL)
    return save


legacy_save = _deterministic_legacy_save()


def f32_num(x):
    s = str(np.float32(x))  # shortest decimal that reads back as the same float32
    assert s not in ("nan", "inf", "-inf"), s
    return s


def fmt_json(obj, indent=0):
    """JSON with each innermost list of numbers on one line; float32 arrays pass as np.ndarray."""
    pad = "  " * indent
    if isinstance(obj, np.ndarray):
        if obj.ndim == 1:
            return "[" + ",".join(f32_num(x) for x in obj) + "]"
        return "[\n" + ",\n".join(pad + "  " + fmt_json(x, indent + 1) for x in obj) + "\n" + pad + "]"
    if isinstance(obj, dict):
        items = [pad + "  " + json.dumps(k) + ": " + fmt_json(v, indent + 1) for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], list):
        return "[\n" + ",\n".join(pad + "  " + fmt_json(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def write_json(path, obj):
    path.write_text(fmt_json(obj) + "\n", encoding="utf-8")


def write_config(d, cfg):
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def fresh_dir(name):
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


# ------------------------------------------------------------------------------------ state dict shapes

def causal_buffer(n_pos, dtype):
    return torch.tril(torch.ones((n_pos, n_pos), dtype=dtype)).view(1, 1, n_pos, n_pos)


def hf_state_dict(w, cfg, prefix, buffer_dtype, lm_head):
    """The state dict GPT2LMHeadModel.state_dict() has: per attention module its parameters are preceded
    by its own buffers (bias, masked_bias); lm_head.weight is the wte tensor object itself (tied)."""
    sd = OrderedDict()
    sd[prefix + "wte.weight"] = w["wte.weight"]
    sd[prefix + "wpe.weight"] = w["wpe.weight"]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        for n in layer_names(i):
            if n == p + "attn.c_attn.weight":
                sd[prefix + p + "attn.bias"] = causal_buffer(cfg["n_positions"], buffer_dtype)
                sd[prefix + p + "attn.masked_bias"] = torch.tensor(-1e4, dtype=torch.float32)
            sd[prefix + n] = w[n]
    sd[prefix + "ln_f.weight"] = w["ln_f.weight"]
    sd[prefix + "ln_f.bias"] = w["ln_f.bias"]
    if lm_head:
        sd["lm_head.weight"] = sd[prefix + "wte.weight"]
    return sd


def mindformers_tensors(w, cfg):
    D = cfg["n_embd"]
    out = []
    for i in range(cfg["n_layer"]):
        p, q = f"h.{i}.", f"backbone.blocks.{i}."
        out += [(q + "layernorm1.gamma", w[p + "ln_1.weight"]), (q + "layernorm1.beta", w[p + "ln_1.bias"])]
        cw, cb = w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]
        for j in range(3):
            out.append((q + f"attention.dense{j + 1}.weight", cw[:, j * D:(j + 1) * D].t().contiguous()))
        for j in range(3):
            out.append((q + f"attention.dense{j + 1}.bias", cb[j * D:(j + 1) * D].contiguous()))
        out += [(q + "attention.projection.weight", w[p + "attn.c_proj.weight"]),
                (q + "attention.projection.bias", w[p + "attn.c_proj.bias"]),
                (q + "layernorm2.gamma", w[p + "ln_2.weight"]), (q + "layernorm2.beta", w[p + "ln_2.bias"]),
                (q + "output.mapping.weight", w[p + "mlp.c_fc.weight"]), (q + "output.mapping.bias", w[p + "mlp.c_fc.bias"]),
                (q + "output.projection.weight", w[p + "mlp.c_proj.weight"]),
                (q + "output.projection.bias", w[p + "mlp.c_proj.bias"])]
    out += [("backbone.layernorm.gamma", w["ln_f.weight"]), ("backbone.layernorm.beta", w["ln_f.bias"]),
            ("backbone.embedding.word_embedding.embedding_table", w["wte.weight"]),
            ("backbone.embedding.position_embedding.embedding_table", w["wpe.weight"])]
    return out


# ------------------------------------------------------------------------------------------- fixtures

TINY = make_config(320, 32, 32, 2, 4, "gelu_new")
IDS = [[0, 17, 319, 42, 100, 255, 3, 200], [319, 1, 64, 128, 0, 300, 7, 99]]
PAD = 319
PADDED_IDS = [[PAD, PAD, PAD, 5, 250, 31, 0, 319], [12, 318, 77, 2, 160, 45, 9, 280]]
PADDED_MASK = [[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8]
PADDED_POS = [[0, 0, 0, 0, 1, 2, 3, 4], list(range(8))]
LOSS_BLOCK = [3, 141, 0, 59, 265, 319, 26, 53, 58, 97, 93, 238, 46, 264, 33, 83, 279]


def expected_for(w, cfg):
    logits = forward(w, cfg, IDS)
    padded = forward(w, cfg, PADDED_IDS, attention_mask=PADDED_MASK, position_ids=PADDED_POS)
    # left padding must not change the real tokens' logits
    alone = forward(w, cfg, [PADDED_IDS[0][3:]])
    assert torch.allclose(padded[0, 3:], alone[0], rtol=0, atol=1e-10)
    assert torch.allclose(padded[1], forward(w, cfg, [PADDED_IDS[1]])[0], rtol=0, atol=1e-10)
    loss = mean_ce(forward(w, cfg, [LOSS_BLOCK[:-1]])[0], LOSS_BLOCK[1:])
    f32 = forward(w, cfg, IDS, dtype=torch.float32).double()
    print(f"  {cfg['activation_function']}: max|logit| {logits.abs().max():.4f}, "
          f"float32-vs-float64 max diff {(f32 - logits).abs().max():.2e}, loss {loss:.6f}")
    return OrderedDict([
        ("ids", IDS),
        ("logits", logits.to(torch.float32).numpy()),
        ("padded", OrderedDict([("ids", PADDED_IDS), ("attention_mask", PADDED_MASK), ("position_ids", PADDED_POS),
                                ("logits", padded.to(torch.float32).numpy())])),
        ("loss", OrderedDict([("block", LOSS_BLOCK), ("value", loss)])),
    ]), logits


# [1], not [0]: tiny-fastgelu's first greedy step after [0] is a near-tie (top-2 gap 6.7e-4)
GREEDY_PROMPTS = [[5, 17, 250, 31], [1], [318, 2, 160, 45, 9, 280, 77]]
GREEDY_STEPS = 12
GREEDY_MIN_GAP = 1e-3


def greedy_for(w, cfg):
    """Greedy decoding in float64 with full-context recomputation (see the module docstring)."""
    continuations, step_logits, gaps = [], [], []
    for k, prompt in enumerate(GREEDY_PROMPTS):
        seq = list(prompt)
        for _ in range(GREEDY_STEPS):
            last = forward(w, cfg, [seq])[0, -1]
            top2 = torch.topk(last, 2).values
            gaps.append(float(top2[0] - top2[1]))
            nxt = int(torch.argmax(last))
            assert last[nxt] == top2[0]
            if k == 0:
                step_logits.append(last.to(torch.float32).numpy())
            seq.append(nxt)
        assert len(seq) <= cfg["n_positions"]
        # cross-check with the loop implementation: by causality the full sequence's logits at position t
        # are the logits the greedy step saw when its context ended at t
        naive = naive_forward(w, cfg, [seq[:-1]])[0]
        assert [int(np.argmax(naive[t])) for t in range(len(prompt) - 1, len(seq) - 1)] == seq[len(prompt):]
        continuations.append(seq[len(prompt):])
    min_gap = min(gaps)
    assert min_gap >= GREEDY_MIN_GAP, f"near-tie in greedy decoding: top-2 gap {min_gap}"
    print(f"  greedy ({cfg['activation_function']}): {continuations}, min top-2 gap {min_gap:.4g}")
    return OrderedDict([
        ("prompts", GREEDY_PROMPTS),
        ("continuations", continuations),
        ("first_prompt_step_logits", np.stack(step_logits)),
        ("min_top2_gap", min_gap),
    ])


def write_greedy(d, w, cfg):
    """greedy.json from the float32 weights as stored in d/model.safetensors."""
    stored = read_safetensors(d / "model.safetensors")
    ws = OrderedDict()
    for n, t in w.items():
        x = stored["transformer." + n]
        assert x.dtype == torch.float32 and torch.equal(x, t), n
        ws[n] = x
    write_json(d / "greedy.json", greedy_for(ws, cfg))


def prefixed(w, dtype=torch.float32):
    return [("transformer." + n, t.to(dtype)) for n, t in sorted(w.items())]


def self_check(w, cfg):
    ref = forward(w, cfg, IDS).numpy()
    naive = naive_forward(w, cfg, IDS)
    diff = np.abs(ref - naive).max()
    assert diff < 1e-11, f"reference implementations disagree by {diff}"
    print(f"  self-check ({cfg['activation_function']}): torch vs loop implementation max diff {diff:.1e}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    w = init_weights(TINY, seed=20240601)
    self_check(w, TINY)
    exp, tiny_logits = expected_for(w, TINY)

    # tiny/
    d = fresh_dir("tiny")
    write_config(d, TINY)
    write_safetensors(d / "model.safetensors", prefixed(w))
    torch.save(hf_state_dict(w, TINY, "transformer.", torch.bool, lm_head=True), d / "pytorch_model.bin")
    write_safetensors(d / "mindformers.safetensors", mindformers_tensors(w, TINY))
    write_json(d / "expected.json", exp)
    write_greedy(d, w, TINY)

    # tiny-legacy/: as OpenAI's converted gpt2 checkpoint (2019): no prefix, float32 0/1 causal buffer
    d = fresh_dir("tiny-legacy")
    write_config(d, TINY)
    legacy_save(hf_state_dict(w, TINY, "", torch.float32, lm_head=False), d / "pytorch_model.bin")

    # tiny-noprefix/: buffers and lm_head as tensors; data packed in reverse header order
    d = fresh_dir("tiny-noprefix")
    write_config(d, TINY)
    sd = hf_state_dict(w, TINY, "", torch.float32, lm_head=True)
    items = sorted(sd.items())
    write_safetensors(d / "model.safetensors", items, data_order=[n for n, _ in reversed(items)])

    # tiny-f16/, tiny-bf16/
    for name, dt in (("tiny-f16", torch.float16), ("tiny-bf16", torch.bfloat16)):
        d = fresh_dir(name)
        write_config(d, TINY)
        write_safetensors(d / "model.safetensors", prefixed(w, dt))
        rounded = OrderedDict((n, t.to(dt)) for n, t in w.items())
        write_json(d / "expected.json", expected_for(rounded, TINY)[0])

    # tiny-gelu/, tiny-fastgelu/
    for name, act, seed in (("tiny-gelu", "gelu", 20240602), ("tiny-fastgelu", "fast_gelu", 20240603)):
        cfg = make_config(320, 32, 32, 2, 4, act)
        wa = init_weights(cfg, seed)
        self_check(wa, cfg)
        d = fresh_dir(name)
        write_config(d, cfg)
        write_safetensors(d / "model.safetensors", prefixed(wa))
        write_json(d / "expected.json", expected_for(wa, cfg)[0])
        write_greedy(d, wa, cfg)

    # tiny-ninner/: an MLP of n_inner = 52 (not 4 x n_embd = 128), still a multiple of 4 (the wasm decoder's width)
    cfg = make_config(320, 32, 32, 2, 4, "gelu_new", n_inner=52)
    wn = init_weights(cfg, 20240605)
    assert wn["h.0.mlp.c_fc.weight"].shape == (32, 52) and wn["h.0.mlp.c_proj.weight"].shape == (52, 32)
    self_check(wn, cfg)
    d = fresh_dir("tiny-ninner")
    write_config(d, cfg)
    write_safetensors(d / "model.safetensors", prefixed(wn))
    write_json(d / "expected.json", expected_for(wn, cfg)[0])
    write_greedy(d, wn, cfg)

    # tiny-strided/: layer 0 c_attn.weight as a transposed view, wpe as an offset slice
    d = fresh_dir("tiny-strided")
    write_config(d, TINY)
    sd = hf_state_dict(w, TINY, "transformer.", torch.bool, lm_head=True)
    D, P = TINY["n_embd"], TINY["n_positions"]
    t = torch.randn((3 * D, D), generator=torch.Generator().manual_seed(7))
    t.copy_(w["h.0.attn.c_attn.weight"].t())
    view = t.t()
    assert not view.is_contiguous() and torch.equal(view, w["h.0.attn.c_attn.weight"])
    big = torch.randn((P + 10, D), generator=torch.Generator().manual_seed(8))
    big[5:5 + P] = w["wpe.weight"]
    sl = big[5:5 + P]
    assert sl.storage_offset() == 5 * D and torch.equal(sl, w["wpe.weight"])
    sd["transformer.h.0.attn.c_attn.weight"] = view
    sd["transformer.wpe.weight"] = sl
    torch.save(sd, d / "pytorch_model.bin")

    # gpt2vocab/
    cfg = make_config(50257, 128, 8, 2, 2, "gelu_new")
    wg = init_weights(cfg, seed=20240604)
    d = fresh_dir("gpt2vocab")
    write_config(d, cfg)
    write_safetensors(d / "model.safetensors", prefixed(wg))
    import gpt2_reference
    vocab = json.loads((ROOT / "src/tokenizer/gpt2/vocab.json").read_text(encoding="utf-8"))
    lines = (ROOT / "src/tokenizer/gpt2/merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    enc = gpt2_reference.Encoder(vocab, [tuple(line.split()) for line in lines if line])
    docs = [x for x in (ROOT / "fixtures/wikitext/golden.articles.txt").read_text(encoding="utf-8").split("\n") if x]
    # golden.articles.txt alone is 88 tokens; its documents are cycled (3 times) to fill 3 blocks of 65
    ids = enc.encode("\n".join(docs * 3))
    assert len(ids) >= 3 * 65
    blocks = [ids[i * 65:(i + 1) * 65] for i in range(3)]
    logits = forward(wg, cfg, [b[:-1] for b in blocks])
    loss = mean_ce(logits.reshape(-1, cfg["vocab_size"]), [t for b in blocks for t in b[1:]])
    print(f"  gpt2vocab: loss {loss:.6f}, perplexity {math.exp(loss):.3f}, max|logit| {logits.abs().max():.4f}")
    (d / "eval.json").write_text(json.dumps(OrderedDict([
        ("block_size", 65),
        ("source", "fixtures/wikitext/golden.articles.txt: its documents x3 joined with \"\\n\", "
                   "GPT-2 encoded, first 3*65 ids"),
        ("blocks", blocks), ("loss", loss), ("perplexity", math.exp(loss))])) + "\n", encoding="utf-8")

    verify(w, tiny_logits)
    print(f"tiny: max|logit| = {tiny_logits.abs().max().item():.6f}")


def verify(w, tiny_logits):
    """Read back what was written and check it against the weights."""
    sd = torch.load(OUT / "tiny/pytorch_model.bin")
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    leg = torch.load(OUT / "tiny-legacy/pytorch_model.bin")
    st = torch.load(OUT / "tiny-strided/pytorch_model.bin")
    assert st["transformer.h.0.attn.c_attn.weight"].stride() == (1, TINY["n_embd"])
    assert st["transformer.wpe.weight"].storage_offset() == 5 * TINY["n_embd"]
    sf = read_safetensors(OUT / "tiny/model.safetensors")
    npf = read_safetensors(OUT / "tiny-noprefix/model.safetensors")
    for n, t in w.items():
        for x in (sd["transformer." + n], leg[n], st["transformer." + n], sf["transformer." + n], npf[n]):
            assert x.dtype == torch.float32 and torch.equal(x, t), n
    assert torch.equal(npf["lm_head.weight"], w["wte.weight"])
    assert leg["h.1.attn.bias"].dtype == torch.float32 and sd["transformer.h.1.attn.bias"].dtype == torch.bool
    assert len(sd) == 2 + 14 * TINY["n_layer"] + 2 + 1 and len(leg) == len(sd) - 1 and len(npf) == len(sd)
    mf = read_safetensors(OUT / "tiny/mindformers.safetensors")
    D = TINY["n_embd"]
    q = mf["backbone.blocks.1.attention.dense2.weight"]
    assert q.shape == (D, D) and torch.equal(q, w["h.1.attn.c_attn.weight"][:, D:2 * D].t())
    assert len(mf) == 16 * TINY["n_layer"] + 4
    for name, dt in (("tiny-f16", torch.float16), ("tiny-bf16", torch.bfloat16)):
        r = read_safetensors(OUT / name / "model.safetensors")
        assert all(torch.equal(r["transformer." + n], t.to(dt)) for n, t in w.items())
    exp = json.loads((OUT / "tiny/expected.json").read_text())
    back = torch.tensor(exp["logits"], dtype=torch.float32)
    assert torch.equal(back, tiny_logits.to(torch.float32))
    print("  verified: files read back equal to the weights; expected logits round-trip exactly")


if __name__ == "__main__":
    main()
