/**
 * General matrix product on wasm SIMD over any wasm memory, for the full-sequence passes (training
 * forward and backward, evaluation, prefill) that run on weights in a shared memory of our own:
 *
 *   C[m, n] = (accumulate ? C : 0) + bias[n] + op(A)[m, k] · op(B)[k, n]
 *
 * with op each operand as stored or transposed, and leading dimensions, so that blocks of bigger
 * matrices can be used in place. The code is in wasm-gemm-code.ts; KernelPool.gemm splits a
 * product across threads. Each output element is one float32 sum in k order (see there), so the
 * result does not depend on the thread count, the blocking or the position of the element.
 */
import { lazyModule, type WasmMemory, type WasmModule } from './wasm-asm.js';
import { GEMM_FUNCTIONS, gemmFunctions, scratchBytes, type GemmShape } from './wasm-gemm-code.js';

/**
 * 5 rows × 8 columns: 10 accumulators, 2 vectors of B, a row's splat and a product use 14 of the
 * 15 xmm registers V8 allocates on x64. Micro-kernel alone, one thread, this CPU: 5×8 38 GFLOPS,
 * 4×8 36–37, 3×12 36, 2×16 32, 6×8 24 (it spills). The packed B block (kc·nc floats, 256 KiB) is
 * half of this CPU's 512 KiB L2 a core; the A sliver (20 KiB of splats) and the B panel the kernel
 * streams (8 KiB) fit the 32 KiB L1. kc 128–384 and nc 128–1024 measured within noise.
 */
export const GEMM_SHAPE: GemmShape = { mr: 5, nv: 2, kc: 256, nc: 256 };

/** Scratch one thread needs (16-byte aligned): 276 KiB. */
export const GEMM_SCRATCH_BYTES = scratchBytes(GEMM_SHAPE);

export interface GemmArgs {
  m: number;
  n: number;
  k: number;
  /** Byte offset of A: [m, k] with rows lda floats apart, or [k, m] if transA. */
  a: number;
  lda: number;
  transA?: boolean;
  /** Byte offset of B: [k, n] with rows ldb floats apart, or [n, k] if transB. */
  b: number;
  ldb: number;
  transB?: boolean;
  /** Byte offset of C: [m, n] with rows ldc floats apart; nothing else in its rows is touched. */
  c: number;
  ldc: number;
  /** Add to C (beta 1) instead of overwriting it (beta 0: C is not read). */
  accumulate?: boolean;
  /** Byte offset of n floats added to every row. */
  bias?: number;
}

/** The wasm function: gemm(a, lda, transA, b, ldb, transB, c, ldc, m, n, k, flags, bias, scratch). */
export type GemmKernel = (...args: number[]) => void;

const gemmLazy = lazyModule(
  () => gemmFunctions(GEMM_SHAPE).map((f, i) => ({ ...f, name: GEMM_FUNCTIONS[i] })),
  (exports) => exports.gemm as GemmKernel,
);

/** The GEMM module for an unshared or a shared memory; compiled once each. */
export const gemmModule: (shared: boolean) => WasmModule = gemmLazy.module;

/** The GEMM function bound to a wasm memory. */
export const gemmKernel: (memory: WasmMemory) => GemmKernel = gemmLazy.bound;

/** Checks a product's arguments against each other and the memory; throws naming the first bad one. */
export function checkGemm(memory: WasmMemory, g: GemmArgs, scratch: number, scratchSize: number): void {
  const bytes = memory.buffer.byteLength;
  const fail = (what: string) => {
    throw new Error(`gemm ${g.m}×${g.k}·${g.k}×${g.n}: ${what}`);
  };
  for (const [key, value] of Object.entries({ m: g.m, n: g.n, k: g.k, lda: g.lda, ldb: g.ldb, ldc: g.ldc })) {
    if (!Number.isInteger(value) || value < 0) fail(`${key} = ${value} is not a count`);
  }
  // [rows, cols] as stored, then its byte extent
  const extent = (name: string, at: number, ld: number, rows: number, cols: number) => {
    if (ld < cols) fail(`${name}'s leading dimension ${ld} is below its ${cols} columns`);
    const end = rows === 0 || cols === 0 ? at : at + 4 * ((rows - 1) * ld + cols);
    if (!Number.isInteger(at) || at < 0 || at % 4 !== 0 || end > bytes) fail(`${name} at byte ${at} (to ${end}) is outside the ${bytes}-byte memory or unaligned`);
  };
  extent('A', g.a, g.lda, ...(g.transA ? [g.k, g.m] : [g.m, g.k]) as [number, number]);
  extent('B', g.b, g.ldb, ...(g.transB ? [g.n, g.k] : [g.k, g.n]) as [number, number]);
  extent('C', g.c, g.ldc, g.m, g.n);
  if (g.bias !== undefined) extent('bias', g.bias, g.n, 1, g.n);
  if (scratch % 16 !== 0 || scratch < 0 || scratch + scratchSize > bytes) fail(`scratch at byte ${scratch} (${scratchSize} bytes) is outside the memory or not 16-byte aligned`);
}

/** The wasm function's arguments for a product. */
export function gemmCall(g: GemmArgs, scratch: number): number[] {
  const flags = (g.accumulate ? 1 : 0) | (g.bias !== undefined ? 2 : 0);
  return [g.a, g.lda, g.transA ? 1 : 0, g.b, g.ldb, g.transB ? 1 : 0, g.c, g.ldc, g.m, g.n, g.k, flags, g.bias ?? 0, scratch];
}

/** Rows [from, to) of a product: a product of its own (A's and C's rows). */
export function gemmRows(g: GemmArgs, from: number, to: number): GemmArgs {
  return { ...g, m: to - from, a: g.a + 4 * from * (g.transA ? 1 : g.lda), c: g.c + 4 * from * g.ldc };
}

/** Columns [from, to) of a product: a product of its own (B's, C's and bias's columns). */
export function gemmColumns(g: GemmArgs, from: number, to: number): GemmArgs {
  const bias = g.bias === undefined ? undefined : g.bias + 4 * from;
  return { ...g, n: to - from, b: g.b + 4 * from * (g.transB ? g.ldb : 1), c: g.c + 4 * from, bias };
}

/** The product on the calling thread, with GEMM_SCRATCH_BYTES of scratch at byte `scratch`. */
export function gemm(memory: WasmMemory, g: GemmArgs, scratch: number): void {
  checkGemm(memory, g, scratch, GEMM_SCRATCH_BYTES);
  gemmKernel(memory)(...gemmCall(g, scratch));
}
