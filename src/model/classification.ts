/**
 * Sequence classification as Hugging Face's GPT2ForSequenceClassification computes it: a bias-free
 * linear `score` (n_embd → num_labels, stored [num_labels, n_embd]) on the final hidden states
 * (after ln_f), read at each record's last real token. The head's description (labels, pad id) is
 * what a classification checkpoint's config.json holds beside GPT-2's keys.
 *
 * Pooling: we read the last position whose attention_mask is 1, so right and left padding give the
 * same logits. HF (since transformers PR #35911, early 2025) reads the rightmost token that is not
 * pad_token_id: (arange(T) · (ids ≠ pad)).argmax(-1), position 0 for a row of pads only; with
 * pad_token_id None, the last position (batches of one only). Earlier releases took the position
 * before the first pad token (PR #24979, 2023) or the count of non-pad tokens − 1: right for right
 * padding only. The current rule and ours agree whenever a record's last real token is not
 * pad_token_id. GPT-2 has no pad token and pads with <|endoftext|> (the seed's and our
 * pad_token_id): a record that itself ends in id 50256 is pooled one token earlier by HF. Text
 * never does here: bpe-encode and gpt2-classify encode "<|endoftext|>" in text as ordinary text.
 *
 * Positions: a right-padded row counts 0, 1, … (HF's default); a left-padded row counts from its
 * first real token, which keeps each row's logits those it has alone. HF gives the same for left
 * padding with position_ids = (attention_mask.cumsum(-1) − 1).clamp(min=0), as its generate does.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { ToolError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import type { GPT2Config } from './config.js';
import type { ForwardOptions, GPT2, TF } from './gpt2.js';
import { gaussian, sourceOf, type ParameterSources, type ParameterValues } from './params.js';

/** The head's weight, by its HF name (no "transformer." prefix). */
export const SCORE = 'score.weight';
export const CLASSIFIER_ARCHITECTURE = 'GPT2ForSequenceClassification';

/** What config.json says about a classification head. */
export interface ClassificationHead {
  num_labels: number;
  /** Label names by id (HF's id2label). */
  labels: string[];
  /** HF's pad_token_id (null: none, as HF allows; our pooling reads the attention mask instead). */
  pad_token_id: number | null;
}

/** HF's names for labels nobody named: LABEL_0, LABEL_1, … */
export const defaultLabels = (n: number): string[] => Array.from({ length: n }, (_, k) => `LABEL_${k}`);

export const scoreShape = (c: GPT2Config, head: Pick<ClassificationHead, 'num_labels'>): number[] => [head.num_labels, c.n_embd];

/** The head a config.json describes, or undefined for a plain GPT-2 (no GPT2ForSequenceClassification in architectures). */
export function headFromConfigJson(json: Record<string, unknown>, where: string): ClassificationHead | undefined {
  const arch = json.architectures;
  if (!Array.isArray(arch) || !arch.includes(CLASSIFIER_ARCHITECTURE)) return undefined;
  const fail = (what: string) => new ToolError(`${where}: ${what}`);
  const id2label = json.id2label;
  let labels: string[] | undefined;
  if (id2label !== undefined && id2label !== null) {
    if (typeof id2label !== 'object' || Array.isArray(id2label)) throw fail('id2label must be an object of "id": "name"');
    const entries = Object.entries(id2label as Record<string, unknown>);
    labels = entries.map((_, k) => {
      const name = (id2label as Record<string, unknown>)[String(k)];
      if (typeof name !== 'string') throw fail(`id2label must name every id from 0 to ${entries.length - 1} (missing "${k}")`);
      return name;
    });
    if (new Set(labels).size !== labels.length) throw fail(`id2label names a label twice (${labels.join(', ')})`);
  }
  const n = json.num_labels ?? labels?.length ?? 2;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw fail(`num_labels must be an integer ≥ 1, found ${JSON.stringify(n)}`);
  if (labels && labels.length !== n) throw fail(`num_labels is ${n} but id2label names ${labels.length} labels`);
  const pad = json.pad_token_id ?? null;
  if (pad !== null && (typeof pad !== 'number' || !Number.isSafeInteger(pad) || pad < 0)) throw fail(`pad_token_id must be an integer ≥ 0 or null, found ${JSON.stringify(pad)}`);
  return { num_labels: n, labels: labels ?? defaultLabels(n), pad_token_id: pad };
}

/** config.json keys of a classification checkpoint (over GPT-2's). */
export function headToConfigJson(head: ClassificationHead): Record<string, unknown> {
  return {
    architectures: [CLASSIFIER_ARCHITECTURE],
    num_labels: head.num_labels,
    id2label: Object.fromEntries(head.labels.map((name, k) => [String(k), name])),
    label2id: Object.fromEntries(head.labels.map((name, k) => [name, k])),
    pad_token_id: head.pad_token_id,
  };
}

/** A fresh score: N(0, initializer_range), HF's _init_weights for a Linear, from our seeded RNG. */
export function initialScore(c: GPT2Config, head: Pick<ClassificationHead, 'num_labels'>, seed: number): { shape: number[]; data: Float32Array } {
  const shape = scoreShape(c, head);
  const normal = gaussian(new Rng(seed, 0x73636f72));
  return { shape, data: Float32Array.from({ length: shape[0] * shape[1] }, () => c.initializer_range * normal()) };
}

/** A batch of variable-length records padded to its longest, with what the forward pass needs. */
export interface PaddedBatch {
  ids: number[][];
  /** Omitted when no record is padded. */
  attentionMask?: number[][];
  /** Omitted for right padding (the default 0, 1, …). */
  positionIds?: number[][];
  /** Each row's last real position. */
  last: Int32Array;
  /** Real tokens in the batch. */
  tokens: number;
}

/**
 * Pads records to the longest with `padId` on `side`. Which id fills a padded position changes
 * nothing (its key is masked and it is never pooled); an empty record is an error (nothing to pool).
 */
export function padBatch(records: ArrayLike<number>[], padId: number, side: 'right' | 'left' = 'right'): PaddedBatch {
  const length = Math.max(...records.map((r) => r.length));
  if (records.length === 0 || records.some((r) => r.length === 0)) throw new ToolError('an empty record has no token to classify');
  const padded = records.some((r) => r.length < length);
  const ids: number[][] = [];
  const mask: number[][] = [];
  const positions: number[][] = [];
  const last = new Int32Array(records.length);
  let tokens = 0;
  records.forEach((r, b) => {
    const pad = new Array<number>(length - r.length).fill(padId);
    const real = Array.from(r);
    tokens += r.length;
    if (side === 'right') {
      ids.push([...real, ...pad]);
      mask.push(real.map(() => 1).concat(pad.map(() => 0)));
      last[b] = r.length - 1;
    } else {
      ids.push([...pad, ...real]);
      mask.push(pad.map(() => 0).concat(real.map(() => 1)));
      positions.push(pad.map(() => 0).concat(real.map((_, t) => t)));
      last[b] = length - 1;
    }
  });
  return {
    ids,
    last,
    tokens,
    ...(padded ? { attentionMask: mask } : {}),
    ...(padded && side === 'left' ? { positionIds: positions } : {}),
  };
}

/** The id that fills padded positions: pad_token_id when the vocabulary has it, else 0 (see padBatch). */
export const padIdFor = (c: GPT2Config, head: ClassificationHead): number =>
  head.pad_token_id !== null && head.pad_token_id < c.vocab_size ? head.pad_token_id : 0;

/** Logits [B, num_labels] from hidden states [B, T, D]: each row's state at `last`, times scoreᵀ. */
export function pooledLogits(tf: TF, hidden: tfjs.Tensor3D, last: Int32Array, score: tfjs.Tensor): tfjs.Tensor2D {
  const [b, t, d] = hidden.shape;
  return tf.tidy(() => {
    const rows = tf.tensor1d(Int32Array.from(last, (p, k) => k * t + p), 'int32');
    const pooled = tf.gather(tf.reshape(hidden, [b * t, d]), rows) as tfjs.Tensor2D;
    return tf.matMul(pooled, score as tfjs.Tensor2D, false, true);
  });
}

/** GPT-2 with a score head: what GPT2ForSequenceClassification computes. */
export class SequenceClassifier {
  private constructor(
    readonly gpt2: GPT2,
    /** [num_labels, n_embd]; a variable when trainable. */
    readonly score: tfjs.Tensor,
    readonly head: ClassificationHead,
  ) {}

  /** Wraps a GPT-2 whose score comes from `values` (checked against the head's shape). */
  static fromValues(gpt2: GPT2, head: ClassificationHead, values: ParameterValues, options: { trainable?: boolean } = {}): SequenceClassifier {
    const tf = gpt2.tf;
    const v = values.get(SCORE);
    const shape = scoreShape(gpt2.config, head);
    if (!v) throw new ToolError(`missing tensor ${SCORE}`);
    if (v.shape.join(',') !== shape.join(',')) throw new ToolError(`tensor ${SCORE} has shape [${v.shape.join(', ')}], expected [${shape.join(', ')}]`);
    const t = tf.tensor(v.data, shape, 'float32');
    if (!options.trainable) return new SequenceClassifier(gpt2, t, head);
    const variable = tf.variable(t, true);
    t.dispose();
    return new SequenceClassifier(gpt2, variable, head);
  }

  /** Wraps a GPT-2 whose score is read from `sources`; the GPT-2 is disposed if that fails. */
  static async fromSources(gpt2: GPT2, head: ClassificationHead, sources: ParameterSources): Promise<SequenceClassifier> {
    try {
      const source = sourceOf(sources, SCORE, scoreShape(gpt2.config, head));
      const data = new Float32Array(source.shape[0] * source.shape[1]);
      await source.readInto(data);
      return new SequenceClassifier(gpt2, gpt2.tf.tensor(data, source.shape, 'float32'), head);
    } catch (err) {
      gpt2.dispose();
      throw err;
    }
  }

  get tf(): TF {
    return this.gpt2.tf;
  }

  get config(): GPT2Config {
    return this.gpt2.config;
  }

  /** Every parameter by HF name: GPT-2's ("transformer.…") and score.weight. */
  get params(): Map<string, tfjs.Tensor> {
    return new Map([...this.gpt2.params, [SCORE, this.score]]);
  }

  /** Pads records (right) the way the batch should be run. */
  pad(records: ArrayLike<number>[], side: 'right' | 'left' = 'right'): PaddedBatch {
    return padBatch(records, padIdFor(this.config, this.head), side);
  }

  /** Logits [B, num_labels] of a padded batch. */
  logits(batch: PaddedBatch, options: Pick<ForwardOptions, 'training' | 'seed'> = {}): tfjs.Tensor2D {
    const { hidden } = this.gpt2.hidden(batch.ids, { ...options, attentionMask: batch.attentionMask, positionIds: batch.positionIds });
    const logits = pooledLogits(this.tf, hidden, batch.last, this.score);
    // In training the tape holds what the gradients need; only inference frees the states at once.
    if (!options.training) hidden.dispose();
    return logits;
  }

  async values(): Promise<ParameterValues> {
    const out = await this.gpt2.values();
    out.set(SCORE, { shape: this.score.shape, data: (await this.score.data()) as Float32Array });
    return out;
  }

  dispose(): void {
    this.gpt2.dispose();
    this.score.dispose();
  }
}
