"""PyTorch anchor for npm run bench:matmul: torch.mm on CPU (through OpenBLAS where Debian's
libblas.so.3 alternative points to it) for the same products as our GEMM, operands stored as ours
are (a transposed operand is a .t() view, which BLAS takes as a transpose flag, not a copy).
Args: threads, budget_ms, then cases "m,k,n,transA,transB". Prints one JSON line: the median
GFLOPS of each case. OpenBLAS's own threads ignore torch.set_num_threads (1 "thread" ran 2048²
at 114 GFLOPS here, 81 with OPENBLAS_NUM_THREADS=1): the caller sets OPENBLAS_NUM_THREADS."""
import json
import statistics
import sys
import time

import torch

threads = int(sys.argv[1])
budget = float(sys.argv[2]) / 1000
cases = [tuple(int(x) for x in c.split(",")) for c in sys.argv[3:]]
torch.manual_seed(0)
torch.set_num_threads(threads)


def gflops(m, k, n, ta, tb):
    a = torch.randn(k, m).t() if ta else torch.randn(m, k)
    b = torch.randn(n, k).t() if tb else torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm-up
    rates = []
    start = time.perf_counter()
    while len(rates) < 3 or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


print(json.dumps([gflops(*c) for c in cases]))
