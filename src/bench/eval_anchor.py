"""PyTorch anchor for npm run bench:eval: what gpt2-eval computes, on the benchmark's checkpoint and
records: the mean next-token cross-entropy of every record (inputs ids[:-1], labels ids[1:]), one
record a forward pass (at 1024 positions a batch of one fills the products already). Times the load
(model.safetensors into tensors) and the forward + loss apart.
Args (JSON): model, records, threads."""
import time

import torch
import torch.nn.functional as F

from anchor import GPT2, read_config, read_records, read_safetensors, report, setup

args = setup()
t0 = time.perf_counter()
config = read_config(args["model"])
model = GPT2(read_safetensors(args["model"] + "/model.safetensors"), config)
load_s = time.perf_counter() - t0
records = read_records(args["records"], config["n_positions"])
t1 = time.perf_counter()
total, tokens = 0.0, 0
with torch.no_grad():
    for ids in records:
        logits = model.logits(model.hidden(ids[None, :-1]))[0]
        # Summed in float64 so that the loss compares with ours to well under 1e-5.
        total += F.cross_entropy(logits, ids[1:], reduction="none").double().sum().item()
        tokens += len(ids) - 1
compute_s = time.perf_counter() - t1
report(args, loss=total / tokens, tokens=tokens, load_s=load_s, compute_s=compute_s, tokens_per_s=tokens / compute_s)
