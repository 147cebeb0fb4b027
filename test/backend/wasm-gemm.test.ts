/**
 * The GEMM (src/backend/wasm-gemm.ts) on a bare wasm memory, for every combination of transposed
 * operands, odd sizes that leave partial micro-tiles and K and N blocks, leading dimensions wider
 * than the rows, accumulate and bias. Each result is checked twice: against the product in
 * float64, within the worst-case rounding bound of a float32 sum of k + 2 terms, and bit for bit
 * against the order the kernel promises (one float32 sum per element in k order, computed here
 * with Math.fround), which is what makes results independent of blocking and threads. Everything
 * around the output block keeps its guard values.
 */
import { describe, expect, it } from 'vitest';
import { MAX_PAGES, wasmApi } from '../../src/backend/wasm-asm.js';
import { KernelPool } from '../../src/backend/kernel-pool.js';
import { gemm, GEMM_SCRATCH_BYTES, GEMM_SHAPE, type GemmArgs } from '../../src/backend/wasm-gemm.js';
import { makeRng, normals } from './compare.js';

const rng = makeRng(23);

/** γ_n of Higham: a float32 sum of n rounded products is within γ_n·Σ|terms| of the exact sum. */
const gamma = (n: number) => (n * 2 ** -24) / (1 - n * 2 ** -24);

interface Case {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  accumulate: boolean;
  bias: boolean;
  /** Extra floats at the end of every stored row of A, B and C (0: tightly packed). */
  pad: number;
}

interface Laid {
  args: GemmArgs;
  /** Float offsets (heap indices) of the operands. */
  at: { a: number; b: number; c: number; bias: number };
  /** The heap region holding C's rows, from `from` to `to` (floats): guard values outside the block. */
  from: number;
  to: number;
  /** Where the next thing may go (float index, 4-aligned). */
  end: number;
}

/**
 * Lays a case out in `heap` from float `start`: random operands at offsets that are 4-byte but not
 * 16-byte aligned, C's region filled with guards (NaN inside the block if C is not to be read).
 */
function layOut(heap: Float32Array, start: number, t: Case): Laid {
  const { m, n, k, pad } = t;
  const [aRows, aCols] = t.transA ? [k, m] : [m, k];
  const [bRows, bCols] = t.transB ? [n, k] : [k, n];
  const lda = aCols + pad;
  const ldb = bCols + pad;
  const ldc = n + pad;
  const a = start + 1;
  const b = a + aRows * lda + 1;
  const bias = b + bRows * ldb + 1;
  const from = bias + n + 1;
  const c = from + 5;
  const to = c + m * ldc + 5;
  heap.set(normals(rng, aRows * lda), a);
  heap.set(normals(rng, bRows * ldb), b);
  heap.set(normals(rng, n), bias);
  for (let i = from; i < to; i++) heap[i] = 1000 + i; // guards
  for (let i = 0; i < m; i++) heap.set(t.accumulate ? normals(rng, n) : new Array<number>(n).fill(NaN), c + i * ldc);
  const args: GemmArgs = {
    m, n, k,
    a: 4 * a, lda, transA: t.transA,
    b: 4 * b, ldb, transB: t.transB,
    c: 4 * c, ldc,
    accumulate: t.accumulate,
    bias: t.bias ? 4 * bias : undefined,
  };
  return { args, at: { a, b, c, bias }, from, to, end: Math.ceil((to + 1) / 4) * 4 };
}

/**
 * The expected result from the heap as laid out (call before the product): exact, the float32
 * sum in the kernel's order; float64 and the scale Σ|terms| for the rounding bound.
 */
function expected(heap: Float32Array, t: Case, l: Laid): { exact: Float32Array; f64: Float64Array; scale: Float64Array } {
  const { m, n, k } = t;
  const { lda, ldb, ldc } = l.args;
  const A = (i: number, p: number) => heap[l.at.a + (t.transA ? p * lda + i : i * lda + p)];
  const B = (p: number, j: number) => heap[l.at.b + (t.transB ? j * ldb + p : p * ldb + j)];
  const exact = new Float32Array(m * n);
  const f64 = new Float64Array(m * n);
  const scale = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      const c0 = t.accumulate ? heap[l.at.c + i * ldc + j] : 0;
      const bias = t.bias ? heap[l.at.bias + j] : 0;
      let s = c0;
      if (t.bias) s = Math.fround(s + bias);
      let d = c0 + bias;
      let sc = Math.abs(c0) + Math.abs(bias);
      for (let p = 0; p < k; p++) {
        const [x, y] = [A(i, p), B(p, j)];
        s = Math.fround(s + Math.fround(x * y));
        d += x * y;
        sc += Math.abs(x * y);
      }
      exact[i * n + j] = s;
      f64[i * n + j] = d;
      scale[i * n + j] = sc;
    }
  }
  return { exact, f64, scale };
}

/** Checks the block against `want` and everything else in C's region against its guard. */
function check(heap: Float32Array, t: Case, l: Laid, want: ReturnType<typeof expected>, label: string): void {
  const { m, n, k } = t;
  const ldc = l.args.ldc;
  const bound = gamma(k + 2);
  let worst = 0;
  let mismatches = 0;
  let first = '';
  for (let at = l.from; at < l.to; at++) {
    const rel = at - l.at.c;
    const [i, j] = [Math.floor(rel / ldc), rel - Math.floor(rel / ldc) * ldc];
    const inBlock = rel >= 0 && i < m && j < n;
    if (!inBlock) {
      if (heap[at] !== 1000 + at) expect.fail(`${label}: heap[${at}] outside the output block changed to ${heap[at]}`);
      continue;
    }
    const got = heap[at];
    const e = i * n + j;
    worst = Math.max(worst, Math.abs(got - want.f64[e]) / (bound * want.scale[e] + 1e-38));
    if (!Object.is(got, want.exact[e]) && mismatches++ === 0) first = `C[${i}, ${j}] = ${got}, float32 in k order ${want.exact[e]}`;
  }
  expect(worst, `${label}: worst error in units of γ_${k + 2}·Σ|terms|`).toBeLessThanOrEqual(1);
  expect(mismatches, `${label}: ${mismatches} elements differ from the k-order float32 sum, first ${first}`).toBe(0);
}

const describeCase = (t: Case) =>
  `${t.m}×${t.k}·${t.k}×${t.n} ${t.transA ? 'Aᵀ' : 'A'}·${t.transB ? 'Bᵀ' : 'B'}${t.accumulate ? ' +=' : ''}${t.bias ? ' +bias' : ''}${t.pad ? ` ld+${t.pad}` : ''}`;

describe('gemm on one thread', () => {
  const memory = new wasmApi.Memory({ initial: 512 }); // unshared, like the tfjs heap
  const heap = new Float32Array(memory.buffer);
  const scratch = heap.length * 4 - GEMM_SCRATCH_BYTES - 16;

  function run(t: Case): void {
    const l = layOut(heap, 0, t);
    const want = expected(heap, t, l);
    gemm(memory, l.args, scratch);
    check(heap, t, l, want, describeCase(t));
  }

  // Odd sizes around the micro-tile (mr × 4·nv) and past one K block (kc) and one N block (nc).
  const { mr, nv, kc, nc } = GEMM_SHAPE;
  const sizes: [number, number, number][] = [
    [1, 1, 1], [3, 7, 5], [7, 3, 17], [17, 33, 7], [mr, 4 * nv, 4], [33, 17, 65], [65, 129, 33],
    [2 * mr + 1, nc + 7, kc + 1], [129, 65, kc + 44], [4, 9, 2 * kc + 3],
  ];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      it(`${transA ? 'Aᵀ' : 'A'}·${transB ? 'Bᵀ' : 'B'}: odd sizes, strided, overwrite / accumulate, with and without bias`, () => {
        sizes.forEach(([m, n, k], s) => {
          for (const accumulate of [false, true]) {
            for (const bias of [false, true]) run({ m, n, k, transA, transB, accumulate, bias, pad: s % 2 ? 3 : 0 });
          }
        });
      });
    }
  }

  it('k = 0 gives C = (C or 0) + bias; an empty block touches nothing', () => {
    for (const accumulate of [false, true]) for (const bias of [false, true]) run({ m: 9, n: 11, k: 0, transA: false, transB: false, accumulate, bias, pad: 2 });
    run({ m: 0, n: 5, k: 3, transA: false, transB: true, accumulate: false, bias: true, pad: 1 });
    run({ m: 6, n: 0, k: 3, transA: true, transB: false, accumulate: true, bias: false, pad: 1 });
  });

  it('the LM head\'s shapes: h·wteᵀ and its gradients against wte stored [vocab, d]', () => {
    const [tokens, d, vocab] = [13, 24, 1031];
    run({ m: tokens, n: vocab, k: d, transA: false, transB: true, accumulate: false, bias: false, pad: 0 }); // logits = h·wteᵀ
    run({ m: tokens, n: d, k: vocab, transA: false, transB: false, accumulate: false, bias: false, pad: 0 }); // dh = dlogits·wte
    run({ m: vocab, n: d, k: tokens, transA: true, transB: false, accumulate: true, bias: false, pad: 0 }); // dwte += dlogitsᵀ·h
  });

  it('rejects arguments that do not fit, naming the operand', () => {
    const ok: GemmArgs = { m: 4, n: 4, k: 4, a: 0, lda: 4, b: 64, ldb: 4, c: 128, ldc: 4 };
    expect(() => gemm(memory, { ...ok, lda: 3 }, scratch)).toThrow(/A's leading dimension 3 is below its 4 columns/);
    expect(() => gemm(memory, { ...ok, transB: true, ldb: 2 }, scratch)).toThrow(/B's leading dimension 2/);
    expect(() => gemm(memory, { ...ok, c: heap.length * 4 - 8 }, scratch)).toThrow(/C at byte/);
    expect(() => gemm(memory, { ...ok, m: 2.5 }, scratch)).toThrow(/m = 2.5 is not a count/);
    expect(() => gemm(memory, ok, scratch + 4)).toThrow(/scratch at byte .* 16-byte aligned/);
  });
});

describe('gemm on threads (KernelPool)', () => {
  const memory = new wasmApi.Memory({ initial: 512, maximum: MAX_PAGES, shared: true });
  const heap = new Float32Array(memory.buffer);
  const scratch = heap.length * 4 - 3 * GEMM_SCRATCH_BYTES - 16;

  it('1, 2 and 3 threads give the same bits, split over columns or rows, unevenly', () => {
    const pools = [1, 2, 3].map((threads) => new KernelPool(memory, threads));
    expect(pools.map((p) => p.threads)).toEqual([1, 2, 3]);
    try {
      const cases: Case[] = [
        { m: 21, n: 1003, k: 40, transA: false, transB: true, accumulate: false, bias: true, pad: 1 }, // columns: 126 tiles of 8 over 2 or 3
        { m: 1001, n: 19, k: 33, transA: true, transB: false, accumulate: true, bias: true, pad: 0 }, // rows: 201 slivers of 5
        { m: 77, n: 83, k: 300, transA: true, transB: true, accumulate: true, bias: false, pad: 2 },
      ];
      for (const t of cases) {
        expect(t.m * t.n * t.k, 'large enough to be split').toBeGreaterThan(1 << 18);
        const l = layOut(heap, 0, t);
        const want = expected(heap, t, l);
        const before = heap.slice(l.from, l.to);
        const results = pools.map((pool) => {
          heap.set(before, l.from);
          pool.gemm(l.args, scratch);
          check(heap, t, l, want, `${describeCase(t)} on ${pool.threads} threads`);
          return heap.slice(l.from, l.to);
        });
        expect(results[1], `${describeCase(t)}: 2 threads against 1`).toEqual(results[0]);
        expect(results[2], `${describeCase(t)}: 3 threads against 1`).toEqual(results[0]);
      }
    } finally {
      for (const p of pools) p.close();
    }
  });

  it('needs threads·GEMM_SCRATCH_BYTES of scratch', () => {
    const pool = new KernelPool(memory, 3);
    try {
      const args: GemmArgs = { m: 4, n: 4, k: 4, a: 0, lda: 4, b: 64, ldb: 4, c: 128, ldc: 4 };
      expect(() => pool.gemm(args, heap.length * 4 - 2 * GEMM_SCRATCH_BYTES)).toThrow(/scratch at byte/);
    } finally {
      pool.close();
    }
  });
});
