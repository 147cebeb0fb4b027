"""Independent oracle: PyTorch's AdamW with gradient clipping, for src/train/optimizer.ts.

Writes fixtures/train/adamw.json: small float32 parameters (2-D weights that decay, 1-D bias and
LayerNorm-style weights that do not), fixed gradients for 5 steps (step 3 with large gradients so that
torch.nn.utils.clip_grad_norm_(max_norm=1.0) scales them down; the others below the limit), a learning
rate per step, and after each step: the pre-clip global norm, the clipped gradients, the parameters and
the optimizer's exp_avg / exp_avg_sq.

Optimizer: torch.optim.AdamW(betas=(0.9, 0.95), eps=1e-8) in two param groups, weight_decay 0.1 for
the 2-D parameters and 0 for the 1-D ones (as MindFormers' and nanoGPT's decay filters), foreach=False
(the single-tensor loop, as on CPU by default). Every value is float32 and written exactly (a Python
float holding the float32 value, which JavaScript's Math.fround maps back to the same float32).

Run by hand with Debian's python3-torch (torch 1.13), not the pyenv python3 on PATH:
    /usr/bin/python3 test/oracle/make_adamw_fixture.py
The output is committed; the tests compare with it and never run Python.
"""
import json
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/train/adamw.json"

torch.manual_seed(20240611)
torch.set_num_threads(1)

BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_NORM = 1.0
LRS = [1e-3, 3e-3, 6e-3, 2e-3, 5e-4]
BIG_STEP = 2  # 0-based: gradients ×50, clipped

SHAPES = {
    "h.0.attn.c_attn.weight": [4, 6],
    "h.0.attn.c_attn.bias": [6],
    "h.0.ln_1.weight": [4],
    "wte.weight": [5, 4],
}


def values(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


params = {}
for name, shape in SHAPES.items():
    if name.endswith("ln_1.weight"):
        init = 1 + 0.1 * torch.randn(shape)
    else:
        init = 0.5 * torch.randn(shape)
    params[name] = torch.nn.Parameter(init.to(torch.float32))

decay = [p for n, p in params.items() if p.dim() >= 2]
no_decay = [p for n, p in params.items() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LRS[0], betas=BETAS, eps=EPS, foreach=False,
)

# Gradients sized so that the global norm is ~0.65–0.9 on ordinary steps (no clipping: the scale
# min(1, 1/(norm+1e-6)) is 1) and ~45 on the big step.
grads_per_step = []
for step in range(len(LRS)):
    g = {n: 0.12 * torch.randn(s) for n, s in SHAPES.items()}
    if step == BIG_STEP:
        g = {n: 50 * v for n, v in g.items()}
    grads_per_step.append(g)

fixture = {
    "about": "torch.optim.AdamW + clip_grad_norm_ oracle; made by test/oracle/make_adamw_fixture.py",
    "torch_version": torch.__version__,
    "betas": list(BETAS),
    "eps": EPS,
    "weight_decay": WEIGHT_DECAY,
    "max_norm": MAX_NORM,
    "lrs": LRS,
    "shapes": SHAPES,
    "decays": {n: params[n].dim() >= 2 for n in SHAPES},
    "initial": {n: values(p) for n, p in params.items()},
    "steps": [],
}

for step, lr in enumerate(LRS):
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    for n, p in params.items():
        p.grad = grads_per_step[step][n].clone()
    norm = torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_NORM)
    clipped = {n: values(p.grad) for n, p in params.items()}
    opt.step()
    state = {n: opt.state[p] for n, p in params.items()}
    fixture["steps"].append({
        "lr": lr,
        "grads": {n: values(g) for n, g in grads_per_step[step].items()},
        "grad_norm": float(norm),
        "clipped_grads": clipped,
        "params": {n: values(p) for n, p in params.items()},
        "exp_avg": {n: values(s["exp_avg"]) for n, s in state.items()},
        "exp_avg_sq": {n: values(s["exp_avg_sq"]) for n, s in state.items()},
    })
    print(f"step {step + 1}: lr {lr:g}, pre-clip norm {float(norm):.6f}")

OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(fixture, indent=1) + "\n")
print(f"wrote {OUT.relative_to(ROOT)}")
