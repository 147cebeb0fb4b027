"""PyTorch anchor for npm run bench:generate: GPT-2 124M (HF semantics, random weights, fp32) on CPU,
batch 1, greedy decoding with a key/value cache after an 8-token prompt; decode tokens/s.
Args: new_tokens runs."""
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

NEW, RUNS = map(int, sys.argv[1:3])
L, D, H, V, P = 12, 768, 12, 50257, 1024
torch.manual_seed(0)
torch.set_num_threads(os.cpu_count() or 1)  # PyTorch uses every core; we use one
w = lambda *shape: torch.randn(*shape) * 0.02
wte, wpe = w(V, D), w(P, D)
layers = [dict(attn=w(D, 3 * D), attn_b=torch.zeros(3 * D), proj=w(D, D), proj_b=torch.zeros(D),
               fc=w(D, 4 * D), fc_b=torch.zeros(4 * D), out=w(4 * D, D), out_b=torch.zeros(D)) for _ in range(L)]


def step(ids, start, cache):
    """Logits of the last position; cache: per layer (k, v) of shape [1, H, t, D/H], extended."""
    t = ids.shape[1]
    x = wte[ids] + wpe[start:start + t]
    for i, p in enumerate(layers):
        q, k, v = (F.layer_norm(x, (D,)) @ p["attn"] + p["attn_b"]).split(D, dim=2)
        q, k, v = (z.view(1, t, H, D // H).transpose(1, 2) for z in (q, k, v))
        if cache[i] is not None:
            k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
        cache[i] = (k, v)
        att = q @ k.transpose(-2, -1) / math.sqrt(D // H)
        if t > 1:  # the prompt: causal (the cache is empty then)
            att = att.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(1, t, D)
        x = x + y @ p["proj"] + p["proj_b"]
        x = x + F.gelu(F.layer_norm(x, (D,)) @ p["fc"] + p["fc_b"], approximate="tanh") @ p["out"] + p["out_b"]
    return F.layer_norm(x[:, -1], (D,)) @ wte.t()


rates = []
with torch.no_grad():
    for _ in range(RUNS):
        cache = [None] * L
        ids = torch.arange(8).view(1, 8) * 104729 % V
        nxt = step(ids, 0, cache).argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for s in range(NEW - 1):
            nxt = step(nxt, 8 + s, cache).argmax(-1, keepdim=True)
        rates.append((NEW - 1) / (time.perf_counter() - t0))
print(json.dumps({"decode_tokens_per_s": statistics.median(rates), "threads": torch.get_num_threads()}))
