/**
 * How a classification run starts (src/train/run-start.ts) and which engine runs it: the score head
 * from --init-from a language model (fresh, seeded, said in one line) or from a classifier (kept),
 * data refused when made for the other task or with another number of labels, and the one chooser
 * sending classification to tfjs with its reason.
 */
import { describe, expect, it } from 'vitest';
import type { Manifest, Task } from '../../src/data/manifest.js';
import { ShardDataset } from '../../src/data/shard-reader.js';
import { loadCheckpoint } from '../../src/formats/checkpoint.js';
import { initialScore, SCORE } from '../../src/model/classification.js';
import { PRESETS } from '../../src/model/config.js';
import { validateTrainConfig } from '../../src/train/config.js';
import { chooseSequenceEngine } from '../../src/train/engine.js';
import { classificationHead, initialModel, taskData } from '../../src/train/run-start.js';
import { fixture } from '../helpers.js';

const config = (over: Record<string, unknown>) => validateTrainConfig({ task: 'sequence_classification', ...over }, 'test');
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
const data = (manifest: Record<string, unknown>) => new ShardDataset<Task>('data/x', manifest as unknown as Manifest, 'none');

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
  const lm = data({ task: 'causal_lm', block_size: 17 });
  const labelled = (labels: string[]) => data({ task: 'classification', num_labels: labels.length, labels });

  it('refuses LM shards for classification and labelled shards for a causal LM (eval data too), naming the fix', () => {
    expect(() => taskData(cls, lm, undefined)).toThrow(/^data\/x holds causal-LM records \(blocks of 17 tokens\); a classifier needs labelled rows/);
    expect(() => taskData(config({ task: 'causal_lm' }), lm, labelled(['neg', 'pos']))).toThrow(
      /^data\/x holds classification records \(2 labels: neg, pos\); a causal LM needs text encoded without --label-column/,
    );
    expect(() => taskData(cls, labelled(['a', 'b', 'c', 'd']), undefined)).toThrow('data/x: 4 labels (manifest num_labels), but model.num_labels is 2; set --set model.num_labels=4');
    expect(taskData(cls, labelled(['neg', 'pos']), labelled(['neg', 'pos'])).task).toBe('classification');
    expect(taskData(config({ task: 'causal_lm' }), lm, lm).task).toBe('causal_lm');
  });

  it('names the labels as the data does, which must be the starting checkpoint’s; pads with eos', () => {
    const modelConfig = PRESETS.gpt2;
    const named = labelled(['neg', 'pos']) as ShardDataset<'classification'>;
    expect(classificationHead(cls, { modelConfig }, named)).toEqual({ num_labels: 2, labels: ['neg', 'pos'], pad_token_id: 50256 });
    const head = { num_labels: 2, labels: ['neg', 'pos'], pad_token_id: 7 };
    expect(classificationHead(cls, { modelConfig, head }, named)).toEqual(head);
    expect(() => classificationHead(cls, { modelConfig, head: { ...head, labels: ['no', 'yes'] } }, named)).toThrow("data/x: labels neg, pos, but the model's head has no, yes");
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
