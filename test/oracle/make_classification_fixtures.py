"""Independent oracle: Hugging Face's GPT2ForSequenceClassification on the tiny fixture model, with PyTorch.

Writes fixtures/models/tiny-cls/:

  config.json         the tiny GPT-2's config as a GPT2ForSequenceClassification: architectures, num_labels 3,
                      id2label / label2id (negative, neutral, positive), pad_token_id 319
  model.safetensors   fixtures/models/tiny's weights ("transformer." names) + score.weight [3, 32] (N(0, 0.2), seeded)
  pytorch_model.bin   the same as GPT2ForSequenceClassification.state_dict() (torch zip format): attention buffers
                      included, no lm_head
  expected.json       batches, pooling and logits (see below)
  grads.safetensors   float32 gradients (HF names) of the loss of the right-padded batch

The model is make_model_fixtures.py's float64 reference forward pass (HF GPT2Model, checked there against a loop
implementation) with `hidden=True`, then what GPT2ForSequenceClassification.forward does: score applied to every
position's hidden state, the logits of each row read at HF's pooling index, and CrossEntropyLoss over the
pooled logits. The pooling index is computed with HF's current rule (since transformers PR #35911, early 2025):
    non_pad = (input_ids != pad_token_id); index = (arange(T) * non_pad).argmax(-1)
i.e. the rightmost token that is not pad_token_id. Both batches hold the same four records (lengths 5, 8, 3, 6;
one with the pad id 319 inside its text, not at its end, where HF's rule and "last position whose
attention_mask is 1" agree, which the script asserts):

  right   right-padded with 319, attention mask, default positions 0..T-1 (what HF computes without position_ids)
  left    left-padded with 319, attention mask, position_ids = (mask.cumsum(-1) - 1).clamp(min=0) (as HF's generate)

Each batch's pooled logits are checked against each record alone (batch of one, pad_token_id None: the last
position) to 1e-12, so left and right padding give the same logits. The script also shows that an older rule,
(input_ids != pad).sum(-1) - 1, pools the left-padded batch at the wrong place (and the record with 319 inside).

expected.json:
  {"pad_token_id", "labels": [names], "records": [[ids]...], "targets": [label ids],
   "score_weight": "model.safetensors: score.weight",
   "right": {"ids", "attention_mask", "pool_index", "logits": [4][3]},
   "left":  {"ids", "attention_mask", "position_ids", "pool_index", "logits": [4][3]},
   "loss": mean cross-entropy of right's pooled logits against targets,
   "grads": "grads.safetensors: gradients of loss, dropout off"}

Gradients by autograd in float64 (a few elements checked by central differences), stored as float32.

Run by hand with Debian's python3-torch (torch 1.13):
    /usr/bin/python3 test/oracle/make_classification_fixtures.py
Deterministic (fixed seeds, one thread). Tests read the outputs and never run Python.
"""
import json
import pathlib
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_model_fixtures import forward, fresh_dir, hf_state_dict, read_safetensors, write_json, write_safetensors  # noqa: E402
from make_train_step_fixtures import load_weights  # noqa: E402

NAME = "tiny-cls"

torch.set_num_threads(1)

PAD = 319
LABELS = ["negative", "neutral", "positive"]
RECORDS = [[5, 250, 31, 0, 77], [12, 318, 77, 2, PAD, 45, 9, 280], [64, 1, 128], [300, 7, 99, 160, 3, 42]]
TARGETS = [0, 2, 1, 2]


def hf_pool_index(ids, pad):
    """transformers' GPT2ForSequenceClassification: the rightmost token that is not pad_token_id."""
    non_pad = (ids != pad).to(torch.int32)
    return (torch.arange(ids.shape[-1], dtype=torch.int32) * non_pad).argmax(-1)


def old_hf_pool_index(ids, pad):
    """An older transformers rule: the count of non-pad tokens minus one (right padding only)."""
    return (ids != pad).sum(-1) - 1


def pad_batch(records, side):
    T = max(len(r) for r in records)
    ids, mask, pos = [], [], []
    for r in records:
        n = T - len(r)
        if side == "right":
            ids.append(r + [PAD] * n)
            mask.append([1] * len(r) + [0] * n)
            pos.append(list(range(T)))
        else:
            ids.append([PAD] * n + r)
            mask.append([0] * n + [1] * len(r))
    if side == "left":
        m = torch.tensor(mask)
        pos = (m.cumsum(-1) - 1).clamp(min=0).tolist()
    return ids, mask, pos


def classify(w, score, cfg, ids, mask, pos):
    """GPT2ForSequenceClassification.forward: score on every position, read at HF's pooling index."""
    hidden = forward(w, cfg, ids, attention_mask=mask, position_ids=pos, dtype=torch.float64, hidden=True)
    logits = hidden @ score.to(torch.float64).t()
    index = hf_pool_index(torch.tensor(ids), PAD)
    return logits[torch.arange(len(ids)), index.long()], index


def main():
    cfg, w = load_weights()  # fixtures/models/tiny
    cfg = OrderedDict(cfg)
    D = cfg["n_embd"]
    g = torch.Generator().manual_seed(20241101)
    score = (torch.randn((len(LABELS), D), generator=g, dtype=torch.float32) * 0.2).contiguous()

    alone = torch.stack([classify(w, score, cfg, [r], None, [list(range(len(r)))])[0][0] for r in RECORDS])
    batches = OrderedDict()
    for side in ("right", "left"):
        ids, mask, pos = pad_batch(RECORDS, side)
        pooled, index = classify(w, score, cfg, ids, mask, pos)
        last_real = [max(t for t, m in enumerate(row) if m) for row in mask]
        assert index.tolist() == last_real, (side, index.tolist(), last_real)
        assert torch.allclose(pooled, alone, rtol=0, atol=1e-12), side
        old = old_hf_pool_index(torch.tensor(ids), PAD).tolist()
        print(f"{side}: pool index {index.tolist()} (the older count rule: {old}), max|logit| {pooled.abs().max():.4f}")
        entry = OrderedDict([("ids", ids), ("attention_mask", mask)])
        if side == "left":
            assert old != last_real, "the old rule should fail on left padding"
            entry["position_ids"] = pos
        entry["pool_index"] = index.tolist()
        entry["logits"] = pooled.to(torch.float32).numpy()
        batches[side] = entry

    # loss and gradients of the right-padded batch
    ids, mask, pos = pad_batch(RECORDS, "right")
    W = OrderedDict((n, t.double().clone().requires_grad_(True)) for n, t in w.items())
    S = score.double().clone().requires_grad_(True)
    pooled, _ = classify(W, S, cfg, ids, mask, pos)
    loss = F.cross_entropy(pooled, torch.tensor(TARGETS))
    loss.backward()
    grads = OrderedDict((f"transformer.{n}", p.grad.detach().clone()) for n, p in W.items())
    grads["score.weight"] = S.grad.detach().clone()
    for name, index in (("score.weight", (2, 5)), ("wte.weight", (PAD, 3)), ("h.1.mlp.c_fc.weight", (4, 9)), ("wpe.weight", (2, 0))):
        h = 1e-6
        vals = []
        for sign in (1, -1):
            Wd = OrderedDict((n, t.double().clone()) for n, t in w.items())
            Sd = score.double().clone()
            (Sd if name == "score.weight" else Wd[name])[index] += sign * h
            vals.append(float(F.cross_entropy(classify(Wd, Sd, cfg, ids, mask, pos)[0], torch.tensor(TARGETS))))
        fd = (vals[0] - vals[1]) / (2 * h)
        key = name if name == "score.weight" else f"transformer.{name}"
        assert abs(fd - float(grads[key][index])) < 1e-8, (name, fd, float(grads[key][index]))
    print(f"loss {float(loss):.6f}; gradient norm {float(torch.sqrt(sum((x ** 2).sum() for x in grads.values()))):.4f}")

    d = fresh_dir(NAME)
    cls_cfg = OrderedDict(cfg)
    cls_cfg["architectures"] = ["GPT2ForSequenceClassification"]
    cls_cfg["num_labels"] = len(LABELS)
    cls_cfg["id2label"] = OrderedDict((str(k), name) for k, name in enumerate(LABELS))
    cls_cfg["label2id"] = OrderedDict((name, k) for k, name in enumerate(LABELS))
    cls_cfg["pad_token_id"] = PAD
    (d / "config.json").write_text(json.dumps(cls_cfg, indent=2) + "\n", encoding="utf-8")
    write_safetensors(d / "model.safetensors", [(f"transformer.{n}", t) for n, t in w.items()] + [("score.weight", score)])
    sd = hf_state_dict(w, cfg, "transformer.", torch.bool, lm_head=False)
    sd["score.weight"] = score
    torch.save(sd, d / "pytorch_model.bin")
    write_safetensors(d / "grads.safetensors", [(n, t.to(torch.float32)) for n, t in grads.items()])
    write_json(d / "expected.json", OrderedDict([
        ("about", "GPT2ForSequenceClassification on fixtures/models/tiny + score.weight; made by "
                  "test/oracle/make_classification_fixtures.py"),
        ("pad_token_id", PAD),
        ("labels", LABELS),
        ("records", RECORDS),
        ("targets", TARGETS),
        ("score_weight", "model.safetensors: score.weight"),
        ("right", batches["right"]),
        ("left", batches["left"]),
        ("loss", float(loss)),
        ("grads", "grads.safetensors: gradients of loss, dropout off"),
    ]))
    back = read_safetensors(d / "model.safetensors")
    assert torch.equal(back["score.weight"], score) and all(torch.equal(back[f"transformer.{n}"], t) for n, t in w.items())
    pt = torch.load(d / "pytorch_model.bin")
    assert torch.equal(pt["score.weight"], score) and "lm_head.weight" not in pt
    print("wrote", ", ".join(f"{p.name} ({p.stat().st_size} bytes)" for p in sorted(d.iterdir())))


if __name__ == "__main__":
    main()
