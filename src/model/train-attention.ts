/**
 * Causal self-attention of the full-sequence pass, forward and backward, without ever holding the
 * [B, H, T, T] probabilities (604 MB for GPT-2 124M at 1024 positions): per (sequence, head),
 * blocks of query rows against the keys they can see, each block's scores in one scratch buffer.
 * The forward keeps each softmax row's log-sum-exp; the backward recomputes the block's
 * probabilities from Q, K and it (flash-attention's recomputation), so it holds one block of
 * scores and one of their gradients at a time.
 *
 * Masking is causal only, as GPT2.hidden is called by the training step and evaluation (no
 * attention mask): records are right-padded, so a real position never sees padding, and padded
 * positions carry no loss weight (make_train_step_fixtures.py checks that PyTorch's loss is the
 * same with and without HF's padding mask). Every product goes through the Gemm interface, the
 * softmax and its gradient through the row kernels.
 */
import type { Gemm } from '../backend/gemm.js';
import type { RowKernels } from '../backend/wasm-rows.js';
import type { SiteDropout } from './train-dropout.js';

export interface AttentionShape {
  heap: Float32Array;
  gemm: Gemm;
  rows: RowKernels;
  /** Sequences, positions, width, heads. */
  B: number;
  T: number;
  C: number;
  H: number;
  /** Query rows per block. */
  queryBlock: number;
}

/** A block of query rows t0…t0+n−1 of one (sequence, head): where its operands are. */
interface Block {
  /** Float offsets of the block's first query, and of the sequence's first key and value. */
  q: number;
  k: number;
  v: number;
  /** Row of the block's first query in [B·T, ·] buffers; h·hd, the head's column. */
  row: number;
  head: number;
  /** Index of the first query's log-sum-exp in [B, H, T]. */
  lse: number;
  t0: number;
  n: number;
}

function forEachBlock(s: AttentionShape, qkv: number, visit: (block: Block) => void): void {
  const { B, T, C, H, queryBlock } = s;
  const hd = C / H;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const head = h * hd;
      const k = qkv + b * T * 3 * C + C + head;
      for (let t0 = 0; t0 < T; t0 += queryBlock) {
        const row = b * T + t0;
        visit({ q: qkv + row * 3 * C + head, k, v: k + C, row, head, lse: (b * H + h) * T + t0, t0, n: Math.min(queryBlock, T - t0) });
      }
    }
  }
}

/**
 * Scores of a block into `scores` [n, keys] then, row by row, probabilities (0 past the diagonal).
 * The forward normalises exp(s·scale − max) by its sum (and drops with `drop`: one kernel scales
 * and masks) and stores lse = max + log(sum), of the probabilities before dropout; the backward
 * recomputes exp(s·scale − lse), the same probabilities to an ulp or two, not dropped yet.
 * Row i of the block is row block.lse + i of the dropout mask: (sequence, head, query) whatever
 * the blocking, so blocks of any size draw the same masks.
 */
function probabilities(s: AttentionShape, { q, k, t0, n, lse: first }: Block, scores: number, lse: number, forward: boolean, drop?: SiteDropout): void {
  const { heap, rows, C, H } = s;
  const hd = C / H;
  const keys = t0 + n;
  const scale = 1 / Math.sqrt(hd);
  s.gemm.gemm({ m: n, n: keys, k: hd, a: q, lda: 3 * C, b: k, ldb: 3 * C, transB: true, c: scores, ldc: keys });
  for (let i = 0; i < n; i++) {
    const row = scores + i * keys;
    const seen = t0 + i + 1;
    if (forward) {
      const max = Math.fround(rows.rowMax(row, seen) * scale); // scale > 0: the largest scaled score
      const sum = rows.expSum(row, seen, scale, -max, true);
      if (drop) rows.dropout(row, row, 1, seen, drop, drop.scale / sum, first + i);
      else rows.scale(row, seen, 1 / sum);
      heap[lse + i] = max + Math.log(sum);
    } else {
      rows.expSum(row, seen, scale, -heap[lse + i], true);
    }
    heap.fill(0, row + seen, row + keys);
  }
}

/** ctx [B·T, C] = drop(softmax(causal(q·kᵀ/√hd)))·v per head, from qkv [B·T, 3C]; lse [B, H, T] kept. */
export function attentionForward(s: AttentionShape, qkv: number, ctx: number, lse: number, scores: number, drop?: SiteDropout): void {
  const { C, H } = s;
  const hd = C / H;
  forEachBlock(s, qkv, (block) => {
    probabilities(s, block, scores, lse + block.lse, true, drop);
    const keys = block.t0 + block.n;
    s.gemm.gemm({ m: block.n, n: hd, k: keys, a: scores, lda: keys, b: block.v, ldb: 3 * C, c: ctx + block.row * C + block.head, ldc: C });
  });
}

/**
 * dqkv [B·T, 3C] (overwritten) from dctx, the saved qkv, ctx and lse. Per block, with P the
 * probabilities, P̃ = drop(P) (P without dropout), dO the block's rows of dctx and
 * D = rowsum(dO ∘ O) = rowsum(dP̃ ∘ P̃) = rowsum(dP ∘ P):
 *   dP̃ = dO·Vᵀ,  dP = drop(dP̃),  dS = P ∘ (dP − D)/√hd,  dQ = dS·K,  dK += dSᵀ·Q,  dV += P̃ᵀ·dO.
 */
export function attentionBackward(s: AttentionShape, qkv: number, ctx: number, lse: number, dctx: number, dqkv: number, scores: number, dscores: number, drop?: SiteDropout): void {
  const { heap, rows, B, T, C, H } = s;
  const hd = C / H;
  const scale = 1 / Math.sqrt(hd);
  heap.fill(0, dqkv, dqkv + B * T * 3 * C); // dK and dV accumulate over query blocks
  forEachBlock(s, qkv, (block) => {
    const { q, k, v, row, head, t0, n } = block;
    const keys = t0 + n;
    const dO = dctx + row * C + head;
    probabilities(s, block, scores, lse + block.lse, false);
    s.gemm.gemm({ m: n, n: keys, k: hd, a: dO, lda: C, b: v, ldb: 3 * C, transB: true, c: dscores, ldc: keys });
    for (let i = 0; i < n; i++) {
      const [o, d] = [ctx + (row + i) * C + head, dO + i * C];
      let D = 0;
      for (let j = 0; j < hd; j++) D += heap[d + j] * heap[o + j];
      if (drop) rows.softmaxGradDropout(scores + i * keys, dscores + i * keys, keys, D, scale, drop, block.lse + i, drop.scale);
      else rows.softmaxGrad(scores + i * keys, dscores + i * keys, keys, D, scale);
    }
    const [dq, dk] = [dqkv + (q - qkv), dqkv + (k - qkv)];
    s.gemm.gemm({ m: n, n: hd, k: keys, a: dscores, lda: keys, b: k, ldb: 3 * C, c: dq, ldc: 3 * C });
    s.gemm.gemm({ m: keys, n: hd, k: n, a: dscores, lda: keys, transA: true, b: q, ldb: 3 * C, c: dk, ldc: 3 * C, accumulate: true });
    s.gemm.gemm({ m: keys, n: hd, k: n, a: scores, lda: keys, transA: true, b: dO, ldb: C, c: dk + C, ldc: 3 * C, accumulate: true });
  });
}
