/**
 * How a classification run starts (src/train/run-start.ts) and which engine runs it: the score head
 * from --init-from a language model (fresh, seeded, said in one line) or from a classifier (kept),
 * data refused when made for the other task or with another number of labels, and the one chooser
 * sending classification to tfjs with its reason.
 */
import { describe, expect, it } from 'vitest';
import type { ShardDataset } from '../../src/data/shard-reader.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { initialScore, SCORE } from '../../src/model/classification.js';
import { PRESETS } from '../../src/model/config.js';
import { validateTrainConfig } from '../../src/train/config.js';
import { chooseSequenceEngine } from '../../src/train/engine.js';
import { checkDataTask, classificationHead, initialModel } from '../../src/train/run-start.js';
import { fixture } from '../helpers.js';

const config = (over: Record<string, unknown>) => validateTrainConfig({ task: 'sequence_classification', ...over }, 'test');
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
const data = (manifest: Record<string, unknown>) => ({ dir: 'data/x', manifest }) as unknown as ShardDataset;

describe('initialModel for sequence classification', () => {
  it('--init-from a language model: score.weight fresh from the seed, said in one line', async () => {
    const from = fixture('models', 'tiny');
    const lines: string[] = [];
    const start = await initialModel(config({ seed: 5, model: { init_from: from, num_labels: 3 } }), (m) => lines.push(m));
    expect(lines).toEqual([`init_from ${from}: a language model; score.weight [3, 32] initialised N(0, 0.02) from seed 5`]);
    expect(start.head).toBeUndefined();
    expect(bits(start.values.get(SCORE)!.data)).toBe(bits(initialScore(start.modelConfig, { num_labels: 3 }, 5).data));
    const lm = await loadCheckpoint(from);
    for (const [name, v] of lm.values) expect(bits(start.values.get(name)!.data), name).toBe(bits(v.data));
  });

  it('--init-from a classifier keeps its score, silently; another number of labels is refused', async () => {
    const from = fixture('models', 'tiny-cls');
    const lines: string[] = [];
    const start = await initialModel(config({ model: { init_from: from, num_labels: 3 } }), (m) => lines.push(m));
    expect(lines).toEqual([]);
    expect(bits(start.values.get(SCORE)!.data)).toBe(bits((await loadCheckpoint(from)).values.get(SCORE)!.data));
    await expect(initialModel(config({ model: { init_from: from, num_labels: 2 } }), () => {})).rejects.toThrow(`model.init_from ${from}: its score head has 3 labels, model.num_labels is 2`);
  });

  it('random init says so too; a causal LM gets no score', async () => {
    const tiny = { preset: null, config: { vocab_size: 97, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2 } };
    const lines: string[] = [];
    const start = await initialModel(config({ seed: 2, model: tiny }), (m) => lines.push(m));
    expect(lines).toEqual(['random init; score.weight [2, 8] initialised N(0, 0.02) from seed 2']);
    expect(start.values.has(SCORE)).toBe(true);
    const lm = await initialModel(config({ task: 'causal_lm', model: tiny }), (m) => lines.push(m));
    expect(lm.values.has(SCORE)).toBe(false);
    expect(lines).toHaveLength(1);
  });
});

describe('data for the task', () => {
  const cls = config({ model: { num_labels: 2 } });
  it('refuses LM shards for classification and labelled shards for a causal LM, naming the fix', () => {
    expect(() => checkDataTask(data({}), cls, 'train_dataset')).toThrow(/^data\/x: holds causal_lm records \(manifest task\), but task is sequence_classification; encode labelled input/);
    expect(() => checkDataTask(data({ task: 'classification', num_labels: 2 }), config({ task: 'causal_lm' }), 'eval_dataset')).toThrow(
      /^data\/x: holds classification records \(manifest task\), but task is causal_lm; encode plain text .* for eval_dataset$/,
    );
    expect(() => checkDataTask(data({ task: 'classification', num_labels: 4 }), cls, 'train_dataset')).toThrow('data/x: 4 labels (manifest num_labels), but model.num_labels is 2; set --set model.num_labels=4');
    expect(() => checkDataTask(data({ task: 'classification', num_labels: 2 }), cls, 'train_dataset')).not.toThrow();
  });

  it('names the labels as the data does, else as the starting checkpoint, else LABEL_k; pads with eos', () => {
    const modelConfig = PRESETS.gpt2;
    expect(classificationHead(cls, { modelConfig }, data({ labels: ['neg', 'pos'] }))).toEqual({ num_labels: 2, labels: ['neg', 'pos'], pad_token_id: 50256 });
    expect(classificationHead(cls, { modelConfig }, data({}))).toEqual({ num_labels: 2, labels: ['LABEL_0', 'LABEL_1'], pad_token_id: 50256 });
    const head = { num_labels: 2, labels: ['no', 'yes'], pad_token_id: 7 };
    expect(classificationHead(cls, { modelConfig, head }, data({}))).toEqual(head);
    expect(() => classificationHead(cls, { modelConfig, head }, data({ labels: ['neg', 'pos'] }))).toThrow("data/x: labels neg, pos, but the model's head has no, yes");
  });
});

describe('chooseSequenceEngine for classification', () => {
  it('sends it to tfjs on wasm, saying why; elsewhere the backend is the reason', () => {
    const shape = { batch: 1, length: 64, training: true };
    const gpt2 = { ...PRESETS.gpt2, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
    expect(chooseSequenceEngine(gpt2, 'wasm', shape, 'sequence_classification')).toEqual({ engine: 'tfjs', why: 'sequence classification: the wasm pass computes only the causal-LM loss' });
    expect(chooseSequenceEngine(gpt2, 'cpu', shape, 'sequence_classification')).toEqual({ engine: 'tfjs', why: 'backend cpu' });
    expect(chooseSequenceEngine(gpt2, 'wasm', shape, 'causal_lm').engine).toBe('wasm-pass');
  });
});
