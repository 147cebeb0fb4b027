/**
 * The small-product kernels (wasm-gemv.ts) and the GEMM (wasm-gemm.ts) split across threads over a
 * shared wasm memory. A decode step is bound by how fast weights stream from memory, and one
 * thread streams about half of what two do on this kind of machine: each product gives a block of
 * its columns (nn) or rows (nt) to each helper thread and does the first block itself. A GEMM is
 * bound by arithmetic and is cut into jobs over whichever of its rows or columns has more
 * micro-tiles, which every thread claims in turn. Every output element is computed by the same
 * kernel code in the same order as without threads, so results are bit-identical.
 *
 * Helpers wait on a shared control block with Atomics (no message passing per product); they are
 * unref'd, so they never keep the process alive, and stop with `close`.
 */
import { Worker } from 'node:worker_threads';
import type { GemmProvider } from './gemm.js';
import { isShared, type WasmMemory } from './wasm-asm.js';
import { smallMatMul, smallMatMulModule, type EncodedKernels, type SmallMatMul } from './wasm-gemv.js';
import type { WeightRef } from './encoded-weights.js';
import { checkGemm, GEMM_SCRATCH_BYTES, GEMM_SHAPE, gemmCall, gemmColumns, gemmKernel, gemmModule, gemmRows, type GemmArgs } from './wasm-gemm.js';

// Control block per helper (Int32): sequence number of the posted job, kernel (0 nn, 1 nt, 2
// gemm, 3… the encoded kernels in ENCODED's order, -1 stop), the kernel's up to eight arguments
// (gemm: the number of jobs in the pool's job table and the helper's scratch), sequence number of
// the finished job, 1 if it failed.
const [SEQ, KERNEL, ARGS, DONE, FAILED, SLOTS] = [0, 1, 2, 10, 11, 12];
const ENCODED = ['nn_f16', 'nn_q8_0', 'nt_f16', 'nt_q8_0'] as const;

/**
 * A GEMM is cut into up to this many jobs a thread, which threads claim from a shared counter: a
 * thread slowed by other work on its core takes fewer (a fixed split waits for the slowest). Each
 * job repacks the operand the jobs share (B for a block of rows, A for a block of columns), a cost
 * of about 3.5·jobs/size of the product (one packed float against 14 flops a cycle), so jobs
 * keep at least MIN_JOB rows or columns.
 */
const JOBS_PER_THREAD = 4;
const MIN_JOB = { rows: 256, columns: 128 };
/** A job in the table: the GEMM's arguments but the scratch (each thread has its own). */
const JOB_INTS = 13;

/**
 * Loads of the control word before sleeping: a decode step posts its next product within a
 * fraction of a millisecond, sooner than a sleeping thread wakes up.
 */
const SPIN = 1 << 17;

const HELPER = `
const { workerData, parentPort, receiveMessageOnPort } = require('node:worker_threads');
const { module, memory, control, jobTable } = workerData;
const k = new WebAssembly.Instance(module, { env: { memory } }).exports;
let gemm; // from the module posted before the first GEMM job
const c = new Int32Array(control);
const jobs = new Int32Array(jobTable);
for (let seen = 0; ; ) {
  for (let i = 0; i < ${SPIN} && Atomics.load(c, ${SEQ}) === seen; i++); // the next product is usually a moment away
  Atomics.wait(c, ${SEQ}, seen);
  seen = Atomics.load(c, ${SEQ});
  const kernel = c[${KERNEL}];
  if (kernel < 0) break;
  try {
    if (kernel === 0) k.nn(c[${ARGS}], c[${ARGS + 1}], c[${ARGS + 2}], c[${ARGS + 3}], c[${ARGS + 4}], c[${ARGS + 5}], c[${ARGS + 6}]);
    else if (kernel === 1) k.nt(c[${ARGS}], c[${ARGS + 1}], c[${ARGS + 2}], c[${ARGS + 3}], c[${ARGS + 4}], c[${ARGS + 5}]);
    else if (kernel >= 3) k[${JSON.stringify(ENCODED)}[kernel - 3]](...c.subarray(${ARGS}, ${ARGS + 8}));
    else for (let j, g = gemm ??= new WebAssembly.Instance(receiveMessageOnPort(parentPort).message, { env: { memory } }).exports.gemm; (j = Atomics.add(jobs, 0, 1)) < c[${ARGS}]; ) g(...jobs.subarray(1 + ${JOB_INTS} * j, ${1 + JOB_INTS} + ${JOB_INTS} * j), c[${ARGS + 1}]);
  } catch {
    c[${FAILED}] = 1;
  }
  Atomics.store(c, ${DONE}, seen);
  Atomics.notify(c, ${DONE});
}
`;

/** Below this many multiply-adds a product runs on the calling thread alone (waking costs more). */
const MIN_SPLIT = 1 << 18;

export class KernelPool implements SmallMatMul {
  private readonly local: SmallMatMul & EncodedKernels;
  private readonly helpers: { worker: Worker; control: Int32Array; seq: number }[];
  /** GEMM jobs: [0] the next to claim, then JOB_INTS each. */
  private readonly jobs: Int32Array;
  /** Whether the helpers were sent the GEMM's module (on first use: compiling it costs ~10 ms). */
  private gemmSent = false;

  /** `threads` in all, the calling one included; needs a shared memory for more than one. */
  constructor(private readonly memory: WasmMemory, threads: number) {
    this.local = smallMatMul(memory);
    const count = isShared(memory) ? Math.max(0, threads - 1) : 0;
    const jobTable = new SharedArrayBuffer(4 * (1 + JOBS_PER_THREAD * (count + 1) * JOB_INTS));
    this.jobs = new Int32Array(jobTable);
    this.helpers = Array.from({ length: count }, () => {
      const control = new SharedArrayBuffer(SLOTS * 4);
      const workerData = { module: smallMatMulModule(true), memory, control, jobTable };
      const worker = new Worker(HELPER, { eval: true, workerData });
      worker.unref();
      return { worker, control: new Int32Array(control), seq: 0 };
    });
  }

  get threads(): number {
    return this.helpers.length + 1;
  }

  /** Columns split into blocks of a multiple of 4 (the kernel's vector width). */
  nn(a: number, b: number, out: number, m: number, k: number, n: number, ld: number): void {
    this.nnThen(a, b, out, m, k, n, ld);
  }

  /**
   * nn, then `then(from, to)` on each block of output columns: this thread's own block while the
   * helpers still compute theirs (time it would spend waiting), the others once they are done.
   */
  nnThen(a: number, b: number, out: number, m: number, k: number, n: number, ld: number, then?: (from: number, to: number) => void): void {
    const parts = this.parts(m * k * n);
    const block = Math.ceil(n / parts / 4) * 4;
    const range = (p: number): [number, number] => [Math.min(n, p * block), Math.min(n, (p + 1) * block)];
    this.split(
      parts,
      (p) => {
        const [from, to] = range(p);
        return to > from ? [0, a, b + from * 4, out + from * 4, m, k, to - from, ld] : undefined;
      },
      (args) => this.local.nn(args[1], args[2], args[3], args[4], args[5], args[6], args[7]),
      then && ((p) => then(...range(p))),
    );
  }

  /** Rows of a (and out) split into blocks. */
  nt(a: number, b: number, out: number, m: number, k: number, n: number): void {
    const parts = this.parts(m * k * n);
    const block = Math.ceil(m / parts);
    this.split(parts, (p) => {
      const from = p * block;
      const rows = Math.min(block, m - from);
      return rows > 0 ? [1, a + from * k * 4, b, out + from * n * 4, rows, k, n, 0] : undefined;
    }, (args) => this.local.nt(args[1], args[2], args[3], args[4], args[5], args[6]));
  }

  /**
   * nnThen over an encoded Conv1D weight w [k, n] (f16 or Q8_0; see wasm-qgemv.ts): out[m, n] =
   * a[m, k]·w, columns split into blocks of a multiple of 8 (the Q8_0 kernel's step). For Q8_0, a
   * is the activations quantised (wasm-qgemv.ts's quantizeActivations).
   */
  nnEncoded(a: number, w: WeightRef, out: number, m: number, then?: (from: number, to: number) => void): void {
    const [k, n] = [w.rows, w.cols];
    const kernel = ENCODED.indexOf(`nn_${w.dtype as 'f16' | 'q8_0'}`);
    const parts = this.parts(m * k * n);
    const block = Math.ceil(n / parts / 8) * 8;
    const range = (p: number): [number, number] => [Math.min(n, p * block), Math.min(n, (p + 1) * block)];
    const bytes = 2; // a column of f16, or of Q8_0's rows interleaved in pairs
    this.split(
      parts,
      (p) => {
        const [from, to] = range(p);
        return to > from ? [3 + kernel, a, w.offset + from * bytes, out + from * 4, m, k, to - from, n, w.scales + from * 4] : undefined;
      },
      (args) => this.local[ENCODED[kernel]](args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8]),
      then && ((p) => then(...range(p))),
    );
  }

  /**
   * nt over an encoded embedding w [rows, k] (the LM head): out[rows, n] = w·b[n, k]ᵀ, rows split
   * into blocks; for Q8_0, b quantised (quantizeActivations).
   */
  ntEncoded(w: WeightRef, b: number, out: number, n: number): void {
    const [m, k] = [w.rows, w.cols];
    const kernel = ENCODED.indexOf(`nt_${w.dtype as 'f16' | 'q8_0'}`);
    const parts = this.parts(m * k * n);
    const block = Math.ceil(m / parts);
    const bytes = w.dtype === 'f16' ? 2 : 1;
    this.split(parts, (p) => {
      const from = p * block;
      const rows = Math.min(block, m - from);
      return rows > 0 ? [3 + kernel, w.offset + from * k * bytes, b, out + from * n * 4, rows, k, n, 0, w.scales + (from * k) / 8] : undefined;
    }, (args) => this.local[ENCODED[kernel]](args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8]));
  }

  /**
   * C (=|+=) op(A)·op(B) (+ bias) on every thread (see GemmArgs), with `threads`·GEMM_SCRATCH_BYTES
   * of scratch at byte `scratch` (16-byte aligned) where each thread packs its panels. Cut into
   * jobs of whole micro-tiles over whichever of rows and columns has more (see JOBS_PER_THREAD).
   */
  gemm(g: GemmArgs, scratch: number): void {
    checkGemm(this.memory, g, scratch, this.threads * GEMM_SCRATCH_BYTES);
    if (g.m === 0 || g.n === 0) return;
    const parts = this.parts(g.m * g.n * Math.max(g.k, 1));
    const [mr, nr] = [GEMM_SHAPE.mr, 4 * GEMM_SHAPE.nv];
    const byColumns = Math.ceil(g.n / nr) >= Math.ceil(g.m / mr);
    const [size, unit] = byColumns ? [g.n, nr] : [g.m, mr];
    const tiles = Math.ceil(size / unit);
    const perThread = Math.max(1, Math.min(JOBS_PER_THREAD, Math.floor(size / parts / (byColumns ? MIN_JOB.columns : MIN_JOB.rows))));
    const chunk = Math.ceil(tiles / Math.min(tiles, parts === 1 ? 1 : parts * perThread)) * unit;
    const count = Math.ceil(size / chunk);
    for (let j = 0; j < count; j++) {
      const [from, to] = [j * chunk, Math.min(size, (j + 1) * chunk)];
      this.jobs.set(gemmCall(byColumns ? gemmColumns(g, from, to) : gemmRows(g, from, to), 0).slice(0, JOB_INTS), 1 + JOB_INTS * j);
    }
    Atomics.store(this.jobs, 0, 0);
    if (!this.gemmSent) for (const h of this.helpers) h.worker.postMessage(gemmModule(true));
    this.gemmSent = true;
    const kernel = gemmKernel(this.memory);
    this.split(Math.min(parts, count), (p) => [2, count, scratch + p * GEMM_SCRATCH_BYTES], ([, , own]) => {
      for (let j; (j = Atomics.add(this.jobs, 0, 1)) < count; ) kernel(...this.jobs.subarray(1 + JOB_INTS * j, 1 + JOB_INTS * (j + 1)), own);
    });
  }

  close(): void {
    for (const h of this.helpers) {
      h.control[KERNEL] = -1;
      Atomics.store(h.control, SEQ, ++h.seq);
      Atomics.notify(h.control, SEQ);
    }
    this.helpers.length = 0;
  }

  private parts(work: number): number {
    return work < MIN_SPLIT ? 1 : this.helpers.length + 1;
  }

  /** Posts parts 1… to the helpers, runs part 0 here, waits for the helpers. */
  private split(parts: number, job: (part: number) => number[] | undefined, run: (args: number[]) => void, then?: (part: number) => void): void {
    const posted: (typeof this.helpers)[number][] = [];
    for (let p = 1; p < parts; p++) {
      const args = job(p);
      if (!args) continue;
      const h = this.helpers[p - 1];
      h.control.set(args, KERNEL);
      Atomics.store(h.control, SEQ, ++h.seq);
      Atomics.notify(h.control, SEQ);
      posted.push(h);
    }
    const own = job(0);
    if (own) run(own);
    then?.(0);
    for (const h of posted) {
      // Wait on the value just compared (a fresh load could already be the new one: a lost wake-up).
      for (let i = 0; i < SPIN && Atomics.load(h.control, DONE) !== h.seq; i++);
      for (let done = Atomics.load(h.control, DONE); done !== h.seq; done = Atomics.load(h.control, DONE)) Atomics.wait(h.control, DONE, done, 1000);
      if (h.control[FAILED]) throw new Error('a kernel thread failed (memory access out of bounds?)');
    }
    for (let p = 1; p < parts; p++) then?.(p);
  }
}

/**
 * The GEMM on a pool of `threads` over a full-sequence pass's memory (src/backend/gemm.ts's
 * GemmProvider): the pass speaks float offsets, the kernel bytes.
 */
export function pooledGemm(threads: number): GemmProvider {
  return {
    scratchFloats: (threads * GEMM_SCRATCH_BYTES) / 4,
    create(memory, scratch) {
      const pool = new KernelPool(memory, threads);
      return {
        gemm: (g) => pool.gemm({ ...g, a: 4 * g.a, b: 4 * g.b, c: 4 * g.c, bias: g.bias === undefined ? undefined : 4 * g.bias }, 4 * scratch),
        close: () => pool.close(),
      };
    },
  };
}
