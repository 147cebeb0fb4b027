"""What the PyTorch anchors of src/bench/*_anchor.py share: the BLAS check, threads, our checkpoints'
model.safetensors and the benchmark's records read without extra packages, GPT-2's forward pass (HF
semantics, Conv1D weights [in, out], written out in plain torch), and the one JSON line of results.

Each anchor runs as `python3 X_anchor.py '<json args>'` in the environment src/bench/harness.ts makes
(OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed, every thread pool held to args["threads"]).
`python3 anchor.py --check` runs only the BLAS check (make bench does, to say up front whether the
anchor can run).
"""
import ctypes
import json
import math
import os
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

INSTALL = "apt-get install -y python3-torch libopenblas0-pthread"
REFUSED = 3  # exit status harness.ts reads as "this machine's PyTorch is not an honest anchor"


def blas():
    """Which BLAS torch's products run on, and 512² mm GFLOPS at this thread count. The library is
    the one holding the sgemm_ that libtorch_cpu binds to (its dependencies, in load order), so a
    reference libblas.so.3 is caught even when OpenBLAS is mapped too (as liblapack.so.3)."""
    a = torch.randn(512, 512)
    a @ a  # loads the BLAS
    with open("/proc/self/maps") as f:
        maps = [line.split() for line in f]
    files = [(int(c[0].split("-")[0], 16), int(c[0].split("-")[1], 16), c[5]) for c in maps if len(c) > 5]
    libtorch = next((path for _, _, path in files if "libtorch_cpu" in path), None)
    try:
        at = ctypes.cast(ctypes.CDLL(libtorch).sgemm_, ctypes.c_void_p).value
        path = next(p for lo, hi, p in files if lo <= at < hi)
    except (AttributeError, OSError, TypeError, StopIteration):
        path = None  # a wheel with MKL linked in statically exports no sgemm_
    lower = (path or "").lower()
    if "openblas" in lower:
        name = "OpenBLAS"
    elif "mkl" in lower or (path is None and "BLAS_INFO=mkl" in torch.__config__.show()):
        name = "MKL"
    elif "libblas" in lower.rsplit("/", 1)[-1]:
        name = "reference BLAS"
    else:
        name = f"unknown BLAS ({path or 'no sgemm_ found'})"
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        a @ a
    return name, path, 2 * 512**3 * reps / (time.perf_counter() - t0) / 1e9


def setup():
    """Parses the JSON args, holds torch to their thread count, refuses a reference BLAS."""
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    name, path, gflops = blas()
    # Debian's python3-torch links the generic libblas.so.3; without OpenBLAS behind that
    # alternative it runs on the reference BLAS (a few GFLOPS), which flatters every ratio.
    if name == "reference BLAS" or (name.startswith("unknown") and gflops < 20):
        print(f"anchor refused: PyTorch's BLAS is the {name} ({path}; 512² mm {gflops:.1f} GFLOPS), not an honest "
              f"anchor; install OpenBLAS: {INSTALL}", file=sys.stderr)
        sys.exit(REFUSED)
    args["blas"], args["mm512_gflops"] = name, gflops
    return args


def report(args, **results):
    """The one JSON line harness.ts reads: results, the BLAS, the threads, peak RSS."""
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**results, "threads": args["threads"], "blas": args["blas"], "mm512_gflops": args["mm512_gflops"], "max_rss_mb": rss_mb}))


def read_safetensors(path):
    """F32 tensors of a safetensors file by name, each read straight into its own tensor."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name, t in header.items():
            if name == "__metadata__":
                continue
            assert t["dtype"] == "F32", f"{path}: {name} is {t['dtype']}, expected F32"
            begin, end = t["data_offsets"]
            data = np.empty(t["shape"], np.float32)
            f.seek(8 + n + begin)
            f.readinto(memoryview(data).cast("B"))
            assert data.nbytes == end - begin
            out[name if name.startswith("transformer.") else "transformer." + name] = torch.from_numpy(data)
    return out


def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def read_records(path, block):
    """The benchmark's records: raw little-endian int32, `block` ids each."""
    return torch.from_numpy(np.fromfile(path, dtype="<i4").astype(np.int64).reshape(-1, block))


class GPT2:
    """GPT-2's forward pass on a dict of HF-named tensors (with or without grad), as HF computes it."""

    def __init__(self, params, config):
        self.p = params
        self.n_layer, self.n_head = config["n_layer"], config["n_head"]
        self.eps = config.get("layer_norm_epsilon", 1e-5)
        assert config.get("activation_function", "gelu_new") == "gelu_new"

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.p[name + ".weight"], self.p[name + ".bias"], self.eps)

    def linear(self, x, name):
        return torch.addmm(self.p[name + ".bias"], x.reshape(-1, x.shape[-1]), self.p[name + ".weight"]).view(*x.shape[:-1], -1)

    def hidden(self, ids, cache=None, start=0):
        """Final (ln_f) hidden states of ids [B, T] at positions start..; cache: per layer (k, v), extended."""
        p, (b, t) = self.p, ids.shape
        x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][start:start + t]
        d = x.shape[-1]
        hd = d // self.n_head
        for i in range(self.n_layer):
            h = f"transformer.h.{i}."
            q, k, v = self.linear(self.ln(x, h + "ln_1"), h + "attn.c_attn").split(d, dim=2)
            q, k, v = (z.view(b, t, self.n_head, hd).transpose(1, 2) for z in (q, k, v))
            if cache is not None:
                if cache[i] is not None:
                    k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
                cache[i] = (k, v)
            att = q @ k.transpose(-2, -1) / math.sqrt(hd)
            if t > 1:  # causal over the new positions; the cached ones are all visible
                s = k.shape[2]
                att = att.masked_fill(torch.ones(t, s, dtype=torch.bool).triu(s - t + 1), float("-inf"))
            y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.linear(y, h + "attn.c_proj")
            x = x + self.linear(F.gelu(self.linear(self.ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh"), h + "mlp.c_proj")
        return self.ln(x, "transformer.ln_f")

    def logits(self, hidden):
        return hidden @ self.p["transformer.wte.weight"].t()


if __name__ == "__main__" and sys.argv[1:] == ["--check"]:
    sys.argv[1] = json.dumps({"threads": 1})
    a = setup()
    print(f"PyTorch anchor: torch {torch.__version__} on {a['blas']}, 512² mm {a['mm512_gflops']:.0f} GFLOPS at 1 thread")
