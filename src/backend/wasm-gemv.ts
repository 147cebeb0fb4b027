/**
 * Matrix products with few rows (or few columns) for the wasm backend, as hand-assembled SIMD
 * kernels working directly in the backend's heap.
 *
 * Decoding one token multiplies a single row by every weight matrix. XNNPACK packs its right
 * operand before multiplying — a second copy of every weight (+70% memory) if the packed form is
 * cached, or a pass that costs more than the product itself if it is not — and runs an [m, 1]
 * result (the LM head as wte·hᵀ) with 1 of 8 lanes busy. These kernels stream the weights once in
 * their stored layout, which is what bounds a decode step: memory bandwidth.
 *
 * Each output element is computed in the same order whatever the number of rows, so a sequence's
 * logits do not depend on the batch it runs in.
 */
import { assemble, Code, I32, isShared, V128, wasmApi, type WasmMemory, type WasmModule } from './wasm-asm.js';
import { encodedKernels, inRowGroups, storeLaneSums, type EncodedDtype } from './wasm-qgemv.js';

export interface SmallMatMul {
  /**
   * out[m, n] = a[m, k] · b[k, n]; n a multiple of 4. Byte offsets into the heap; rows of b and
   * out are `ld` floats apart (ld ≥ n: a block of columns of wider matrices).
   */
  nn(a: number, b: number, out: number, m: number, k: number, n: number, ld: number): void;
  /** nn, then `then(from, to)` on blocks of output columns (KernelPool: overlapped with other threads). */
  nnThen?(a: number, b: number, out: number, m: number, k: number, n: number, ld: number, then?: (from: number, to: number) => void): void;
  /** out[m, n] = a[m, k] · b[n, k]ᵀ; k a multiple of 4. Byte offsets into the heap. */
  nt(a: number, b: number, out: number, m: number, k: number, n: number): void;
}

/**
 * nn and nt over weights encoded as f16 or Q8_0 (wasm-qgemv.ts): `w` is nn's b and nt's a, `s`
 * the Q8_0 scales (byte offsets); the same bits as nn and nt over the decoded weights.
 */
export type EncodedKernel = (a: number, b: number, out: number, m: number, k: number, n: number, ld: number, s: number) => void;
export type EncodedKernels = Record<`${'nn' | 'nt'}_${EncodedDtype}`, EncodedKernel>;

// Parameters of both kernels: a, b, out, m, k, n (then nn's ld).
const [A, B, OUT, M, K, N, LD] = [0, 1, 2, 3, 4, 5, 6];

/**
 * nn: rows of b eight at a time (eight streams from memory), each block applied to every row of a
 * while it is in cache, then leftover rows of b one by one. Each product is added to the running
 * sum in turn — out = ((out + a[i, kk]·b[kk, :]) + a[i, kk+1]·b[kk+1, :]) + … — so every element
 * is one float32 sum in k order from 0, as the GEMM computes it (wasm-gemm-code.ts): WasmDecoder
 * sends a product to either by its number of rows and relies on the same bits from both.
 */
const NN_ROWS = 8;
function nnKernel(): Code {
  const [NB, KK, I, O, J, SB, AP] = [7, 8, 9, 10, 11, 12, 13];
  const R = [14, 15, 16, 17, 18, 19, 20, 21];
  const X = [22, 23, 24, 25, 26, 27, 28, 29]; // v128
  const R0 = R[0];
  const c = new Code();
  c.get(N).i32(2).shl().set(NB);
  c.get(LD).i32(2).shl().set(SB);
  // out = 0, row by row
  c.i32(0).set(I);
  c.whileNot(
    () => c.get(I).get(M).geU(),
    () => {
      c.get(OUT).get(I).get(SB).mul().add().set(O);
      c.i32(0).set(J);
      c.whileNot(
        () => c.get(J).get(NB).geU(),
        () => c.get(O).get(J).add().v128Zero().v128Store().inc(J, 16),
      );
      c.inc(I, 1);
    },
  );
  const rowsOf = (width: number) => {
    // for i in 0..m: splat a[i, kk..kk+width), then out[i, :] += Σ x·r over the row
    c.i32(0).set(I);
    c.whileNot(
      () => c.get(I).get(M).geU(),
      () => {
        c.get(A).get(I).get(K).mul().get(KK).add().i32(2).shl().add().set(AP);
        for (let t = 0; t < width; t++) c.get(AP).f32Load(4 * t).f32x4Splat().set(X[t]);
        c.get(OUT).get(I).get(SB).mul().add().set(O);
        c.i32(0).set(J);
        c.whileNot(
          () => c.get(J).get(NB).geU(),
          () => {
            c.get(O).get(J).add(); // store address
            c.get(O).get(J).add().v128Load();
            for (let t = 0; t < width; t++) c.get(X[t]).get(R[t]).get(J).add().v128Load().f32x4Mul().f32x4Add();
            c.v128Store().inc(J, 16);
          },
        );
        c.inc(I, 1);
      },
    );
  };
  c.i32(0).set(KK);
  c.whileNot(
    () => c.get(KK).i32(NN_ROWS).add().get(K).gtU(),
    () => {
      c.get(B).get(KK).get(SB).mul().add().set(R0);
      for (let t = 1; t < NN_ROWS; t++) c.get(R[t - 1]).get(SB).add().set(R[t]);
      rowsOf(NN_ROWS);
      c.inc(KK, NN_ROWS);
    },
  );
  c.whileNot(
    () => c.get(KK).get(K).geU(),
    () => {
      c.get(B).get(KK).get(SB).mul().add().set(R0);
      rowsOf(1);
      c.inc(KK, 1);
    },
  );
  return c;
}

/**
 * nt: dot products of rows, eight rows of a at a time against one row of b (eight independent sums
 * and streams, one load of b; eight measured ~20% faster than four when streaming the LM head),
 * then leftover rows of a one by one. A sum runs over k in order, then its lanes.
 */
const NT_ROWS = 8;
function ntKernel(): Code {
  const [KB, I, J, P, RB, OP] = [6, 7, 8, 9, 10, 11];
  const RA = [12, 13, 14, 15, 16, 17, 18, 19];
  const ACC = [20, 21, 22, 23, 24, 25, 26, 27]; // v128
  const BV = 28; // v128
  const c = new Code();
  c.get(K).i32(2).shl().set(KB);
  const rows = (count: number) => {
    // out[i..i+count, j] for every j
    c.get(A).get(I).get(KB).mul().add().set(RA[0]);
    for (let t = 1; t < count; t++) c.get(RA[t - 1]).get(KB).add().set(RA[t]);
    c.i32(0).set(J);
    c.whileNot(
      () => c.get(J).get(N).geU(),
      () => {
        c.get(B).get(J).get(KB).mul().add().set(RB);
        for (let t = 0; t < count; t++) c.v128Zero().set(ACC[t]);
        c.i32(0).set(P);
        c.whileNot(
          () => c.get(P).get(KB).geU(),
          () => {
            c.get(RB).get(P).add().v128Load().set(BV);
            for (let t = 0; t < count; t++) c.get(ACC[t]).get(RA[t]).get(P).add().v128Load().get(BV).f32x4Mul().f32x4Add().set(ACC[t]);
            c.inc(P, 16);
          },
        );
        storeLaneSums(c, { out: OUT, i: I, j: J, n: N, op: OP }, ACC.slice(0, count));
        c.inc(J, 1);
      },
    );
  };
  inRowGroups(c, I, M, NT_ROWS, rows);
  return c;
}

const compiled = new Map<boolean, WasmModule>();

/** The kernels' module, for an unshared (the tfjs heap) or a shared memory; compiled once each. */
export function smallMatMulModule(shared: boolean): WasmModule {
  let module = compiled.get(shared);
  if (module === undefined) {
    module = assemble(
      [
        { name: 'nn', params: 7, locals: [{ count: 15, type: I32 }, { count: 8, type: V128 }], code: nnKernel() },
        { name: 'nt', params: 6, locals: [{ count: 14, type: I32 }, { count: 9, type: V128 }], code: ntKernel() },
        ...encodedKernels(),
      ],
      shared,
    );
    compiled.set(shared, module);
  }
  return module;
}

const instances = new WeakMap<WasmMemory, SmallMatMul & EncodedKernels>();

/** The kernels bound to a wasm memory (the backend's heap, or a shared one). */
export function smallMatMul(memory: WasmMemory): SmallMatMul & EncodedKernels {
  let kernels = instances.get(memory);
  if (kernels === undefined) {
    const exports = new wasmApi.Instance(smallMatMulModule(isShared(memory)), { env: { memory } }).exports as unknown as SmallMatMul & EncodedKernels;
    kernels = { nn: exports.nn, nt: exports.nt, nn_f16: exports.nn_f16, nn_q8_0: exports.nn_q8_0, nt_f16: exports.nt_f16, nt_q8_0: exports.nt_q8_0 };
    instances.set(memory, kernels);
  }
  return kernels;
}
