/**
 * Classification checkpoints are the directories HF's GPT2ForSequenceClassification reads and
 * writes: config.json with architectures, num_labels, id2label/label2id and pad_token_id, and
 * score.weight [num_labels, n_embd] beside the "transformer." tensors. Checked on the PyTorch-made
 * fixture (fixtures/models/tiny-cls: safetensors and pytorch_model.bin), through convert-weights, and
 * by a save/load round trip.
 */
import { readFileSync, writeFileSync, cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadCheckpoint, openCheckpoint, saveCheckpoint } from '../../src/formats/checkpoint.js';
import { convertWeights } from '../../src/formats/convert.js';
import { readSafetensors } from '../../src/formats/safetensors.js';
import { headFromConfigJson, initialScore, SCORE } from '../../src/model/classification.js';
import { presetConfig } from '../../src/model/config.js';
import { initialParameters } from '../../src/model/params.js';
import { fixture, tempDir } from '../helpers.js';

const dir = tempDir();
const TINY_CLS = fixture('models', 'tiny-cls');
const HEAD = { num_labels: 3, labels: ['negative', 'neutral', 'positive'], pad_token_id: 319 };
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');

describe('classification checkpoints', () => {
  it('the PyTorch-made fixture loads with its head and its score, from safetensors and from pytorch_model.bin', async () => {
    const ck = await loadCheckpoint(TINY_CLS);
    expect(ck.head).toEqual(HEAD);
    expect(ck.ignored).toEqual([]);
    const stored = (await readSafetensors(join(TINY_CLS, 'model.safetensors'))).tensors.get(SCORE)!;
    expect(ck.values.get(SCORE)!.shape).toEqual([3, 32]);
    expect(bits(ck.values.get(SCORE)!.data)).toBe(bits(stored.data));
    const streamed = await openCheckpoint(TINY_CLS);
    expect(streamed.head).toEqual(HEAD);
    expect(streamed.params.get(SCORE)?.shape).toEqual([3, 32]);
    await streamed.close();

    const binOnly = join(dir, 'bin-only');
    cpSync(TINY_CLS, binOnly, { recursive: true });
    rmSync(join(binOnly, 'model.safetensors'));
    const fromBin = await loadCheckpoint(binOnly);
    expect(fromBin.head).toEqual(HEAD);
    expect(fromBin.ignored).toEqual([]); // the attention buffers are known, lm_head is absent
    for (const [name, v] of ck.values) expect(bits(fromBin.values.get(name)!.data), name).toBe(bits(v.data));
  });

  it.each([
    ['a directory (model.safetensors)', TINY_CLS],
    ['pytorch_model.bin', join(TINY_CLS, 'pytorch_model.bin')],
  ])('convert-weights keeps the head of %s', async (_what, src) => {
    const out = join(dir, `converted-${Math.random().toString(36).slice(2)}`);
    const result = await convertWeights(src, out);
    expect(result.head).toEqual(HEAD);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config).toMatchObject({
      architectures: ['GPT2ForSequenceClassification'],
      model_type: 'gpt2',
      num_labels: 3,
      id2label: { 0: 'negative', 1: 'neutral', 2: 'positive' },
      label2id: { negative: 0, neutral: 1, positive: 2 },
      pad_token_id: 319,
    });
    const want = (await loadCheckpoint(TINY_CLS)).values;
    const got = (await readSafetensors(join(out, 'model.safetensors'))).tensors;
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [name, v] of want) expect(bits(got.get(name)!.data), name).toBe(bits(v.data));
  });

  it('round-trips through saveCheckpoint: HF config keys exactly, score.weight [num_labels, n_embd]', async () => {
    const config = { ...presetConfig('gpt2-tiny'), vocab_size: 97, n_positions: 16, n_embd: 8, n_layer: 1, n_head: 2 };
    const head = { num_labels: 2, labels: ['bad', 'good'], pad_token_id: 50256 };
    const values = initialParameters(config, 3);
    values.set(SCORE, initialScore(config, head, 3));
    const out = join(dir, 'saved');
    await saveCheckpoint(out, config, values, { head });
    const json = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(json.architectures).toEqual(['GPT2ForSequenceClassification']);
    expect([json.num_labels, json.id2label, json.label2id, json.pad_token_id]).toEqual([2, { 0: 'bad', 1: 'good' }, { bad: 0, good: 1 }, 50256]);
    const stored = (await readSafetensors(join(out, 'model.safetensors'))).tensors.get(SCORE)!;
    expect(stored.shape).toEqual([2, 8]);
    const back = await loadCheckpoint(out);
    expect(back.head).toEqual(head);
    for (const [name, v] of values) expect(bits(back.values.get(name)!.data), name).toBe(bits(v.data));
  });

  it('refuses a classification config without score.weight, or with one of another shape', async () => {
    const noScore = join(dir, 'no-score');
    cpSync(fixture('models', 'tiny'), noScore, { recursive: true });
    const json = JSON.parse(readFileSync(join(noScore, 'config.json'), 'utf8'));
    writeFileSync(join(noScore, 'config.json'), JSON.stringify({ ...json, architectures: ['GPT2ForSequenceClassification'], num_labels: 2 }));
    await expect(loadCheckpoint(noScore)).rejects.toThrow(/model\.safetensors: missing tensor score\.weight \(config\.json says GPT2ForSequenceClassification\)$/);
    const wrong = join(dir, 'wrong-labels');
    cpSync(TINY_CLS, wrong, { recursive: true });
    const cls = JSON.parse(readFileSync(join(wrong, 'config.json'), 'utf8'));
    writeFileSync(join(wrong, 'config.json'), JSON.stringify({ ...cls, num_labels: 2, id2label: { 0: 'a', 1: 'b' }, label2id: { a: 0, b: 1 } }));
    await expect(loadCheckpoint(wrong)).rejects.toThrow('tensor score.weight has shape [3, 32], the config expects [2, 32]');
  });

  it('reads id2label, num_labels and pad_token_id as HF writes them, naming what is wrong', () => {
    const arch = { architectures: ['GPT2ForSequenceClassification'] };
    expect(headFromConfigJson({ architectures: ['GPT2LMHeadModel'] }, 'c')).toBeUndefined();
    expect(headFromConfigJson(arch, 'c')).toEqual({ num_labels: 2, labels: ['LABEL_0', 'LABEL_1'], pad_token_id: null });
    expect(headFromConfigJson({ ...arch, id2label: { 1: 'b', 0: 'a', 2: 'c' } }, 'c')).toEqual({ num_labels: 3, labels: ['a', 'b', 'c'], pad_token_id: null });
    expect(() => headFromConfigJson({ ...arch, id2label: { 0: 'a', 2: 'c' } }, 'c')).toThrow('c: id2label must name every id from 0 to 1 (missing "1")');
    expect(() => headFromConfigJson({ ...arch, num_labels: 3, id2label: { 0: 'a', 1: 'b' } }, 'c')).toThrow('c: num_labels is 3 but id2label names 2 labels');
    expect(() => headFromConfigJson({ ...arch, id2label: { 0: 'a', 1: 'a' } }, 'c')).toThrow('c: id2label names a label twice (a, a)');
    expect(() => headFromConfigJson({ ...arch, pad_token_id: -1 }, 'c')).toThrow('c: pad_token_id must be an integer ≥ 0 or null, found -1');
  });
});
