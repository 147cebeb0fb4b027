"""PyTorch anchor for npm run bench:train: the weights of the benchmark's checkpoint, its records in
order, the same step as gpt2-train's (mean next-token cross-entropy over `accumulation` micro-batches
of `batch` records, global-norm clipping at 1, AdamW β (0.9, 0.95), eps 1e-8, weight decay 0.1 on
matrices only, lr 1e-4, no dropout). Times each optimizer step; the first `warmup` do not count.
Args (JSON): model, records, batch, accumulation, steps, warmup, threads."""
import statistics
import time

import torch
import torch.nn.functional as F

from anchor import GPT2, read_config, read_records, read_safetensors, report, setup

args = setup()
config = read_config(args["model"])
params = {k: v.requires_grad_() for k, v in read_safetensors(args["model"] + "/model.safetensors").items()}
model = GPT2(params, config)
T = config["n_positions"]
records = read_records(args["records"], T + 1)
B, M = args["batch"], args["accumulation"]
decay = [p for p in params.values() if p.dim() >= 2]
rest = [p for p in params.values() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                        lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
times, losses, used = [], [], 0
for step in range(args["warmup"] + args["steps"]):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for _ in range(M):
        ids = records[used:used + B]
        assert len(ids) == B, "the benchmark wrote too few records"
        used += B
        logits = model.logits(model.hidden(ids[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        (loss / M).backward()
        loss_sum += loss.item()
        del logits, loss
    torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
    opt.step()
    losses.append(loss_sum / M)
    if step >= args["warmup"]:
        times.append(time.perf_counter() - t0)
step_s = statistics.median(times)
report(args, tokens_per_s=B * M * T / step_s, step_s=step_s, losses=losses)
