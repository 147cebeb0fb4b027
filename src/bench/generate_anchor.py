"""PyTorch anchor for npm run bench:generate, on the benchmark's checkpoint (GPT-2 124M, random weights):
prefill — the prompts' forward pass filling a key/value cache, logits of the last position, its argmax:
what gpt2-generate does before its first token — for each [batch, length] shape; then greedy decoding
with the cache after an 8-token prompt, batch 1. Medians of `prefill_runs` and `runs`.
Args (JSON): model, prefill ([[batch, length], ...]), prefill_runs, new_tokens, runs, threads."""
import statistics
import time

import torch

from anchor import GPT2, read_config, read_safetensors, report, setup

args = setup()
config = read_config(args["model"])
model = GPT2(read_safetensors(args["model"] + "/model.safetensors"), config)
V, L = config["vocab_size"], config["n_layer"]
prompt = lambda b, t: (torch.arange(b).view(b, 1) * 7919 + torch.arange(t).view(1, t) * 104729) % V


def first_token(ids, cache):
    return model.logits(model.hidden(ids, cache)[:, -1]).argmax(-1, keepdim=True)


prefill = []
with torch.no_grad():
    for b, t in args["prefill"]:
        times = []
        for _ in range(args["prefill_runs"]):
            t0 = time.perf_counter()
            first_token(prompt(b, t), [None] * L)
            times.append(time.perf_counter() - t0)
        s = statistics.median(times)
        prefill.append({"batch": b, "length": t, "s": s, "tokens_per_s": b * t / s})
    rates, new = [], args["new_tokens"]
    for _ in range(args["runs"]):
        cache = [None] * L
        nxt = first_token(prompt(1, 8), cache)
        t0 = time.perf_counter()
        for s in range(new - 1):
            nxt = model.logits(model.hidden(nxt, cache, 8 + s)[:, -1]).argmax(-1, keepdim=True)
        rates.append((new - 1) / (time.perf_counter() - t0))
report(args, prefill=prefill, decode_tokens_per_s=statistics.median(rates))
