/**
 * Logits processors: small functions that edit one sequence's next-token logits in place, with
 * Hugging Face's semantics, composed in HF's order (penalties and bans first, then temperature,
 * top-k and top-p when sampling). A forbidden token gets −Infinity.
 */

export interface DecodeContext {
  /** Prompt and generated tokens so far. */
  tokens: readonly number[];
  /** Tokens generated so far. */
  generated: number;
}

export type LogitsProcessor = (logits: Float32Array, ctx: DecodeContext) => void;

/** Divides logits by t (t > 0). */
export function temperature(t: number): LogitsProcessor {
  if (!(t > 0)) throw new RangeError(`temperature must be > 0, got ${t}`);
  return (logits) => {
    if (t === 1) return;
    for (let i = 0; i < logits.length; i++) logits[i] /= t;
  };
}

/** Keeps the k highest logits (ties with the k-th kept, as HF's `logits < kth`); k = 0 disables. */
export function topK(k: number): LogitsProcessor {
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`top-k must be an integer ≥ 0, got ${k}`);
  return (logits) => {
    if (k === 0 || k >= logits.length) return;
    const kth = kthLargest(logits, k);
    for (let i = 0; i < logits.length; i++) if (logits[i] < kth) logits[i] = -Infinity;
  };
}

/**
 * Nucleus: keeps the smallest set of most likely tokens whose probabilities sum to at least p
 * (HF's TopPLogitsWarper, min_tokens_to_keep 1); p = 1 disables.
 */
export function topP(p: number): LogitsProcessor {
  if (!(p > 0 && p <= 1)) throw new RangeError(`top-p must be in (0, 1], got ${p}`);
  return (logits) => {
    if (p === 1) return;
    const order = Array.from(logits.keys()).filter((i) => logits[i] !== -Infinity);
    order.sort((a, b) => logits[b] - logits[a] || a - b);
    const probs = softmax(order.map((i) => logits[i]));
    let mass = 0;
    let keep = 0;
    while (keep < order.length && (keep === 0 || mass < p)) mass += probs[keep++];
    for (let r = keep; r < order.length; r++) logits[order[r]] = -Infinity;
  };
}

/** HF's repetition penalty: for tokens already present, positive logits ÷ r, negative × r. */
export function repetitionPenalty(r: number): LogitsProcessor {
  if (!(r > 0)) throw new RangeError(`repetition penalty must be > 0, got ${r}`);
  return (logits, ctx) => {
    if (r === 1) return;
    for (const t of new Set(ctx.tokens)) logits[t] = logits[t] > 0 ? logits[t] / r : logits[t] * r;
  };
}

/** Bans any token that would repeat an n-gram already in the sequence (HF's NoRepeatNGram). */
export function noRepeatNgram(n: number): LogitsProcessor {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`no-repeat n-gram size must be an integer ≥ 0, got ${n}`);
  return (logits, ctx) => {
    const tokens = ctx.tokens;
    if (n === 0 || tokens.length < n) return;
    const prefix = tokens.slice(tokens.length - n + 1);
    for (let s = 0; s + n <= tokens.length; s++) {
      let match = true;
      for (let k = 0; k < n - 1 && match; k++) match = tokens[s + k] === prefix[k];
      if (match) logits[tokens[s + n - 1]] = -Infinity;
    }
  };
}

/** Forbids end-of-sequence tokens until `min` tokens have been generated. */
export function minNewTokens(min: number, eosIds: readonly number[]): LogitsProcessor {
  return (logits, ctx) => {
    if (ctx.generated < min) for (const e of eosIds) logits[e] = -Infinity;
  };
}

export function applyProcessors(processors: readonly LogitsProcessor[], logits: Float32Array, ctx: DecodeContext): void {
  for (const p of processors) p(logits, ctx);
}

/** Probabilities of logits, in float64 (−Infinity gives 0). */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = logits[i] === -Infinity ? 0 : Math.exp(logits[i] - max);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** The k-th largest value (k ≥ 1), by partial selection. */
function kthLargest(values: Float32Array, k: number): number {
  const copy = Float32Array.from(values).sort(); // ascending; 50257 floats sort in ~2 ms
  return copy[copy.length - k];
}
