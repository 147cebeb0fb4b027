/**
 * npm run bench:lora-load — what a LoRA adapter costs at load time: `gpt2-generate` on the `gpt2`
 * preset (124M, fp32, random weights from a checkpoint this benchmark writes) with and without
 * `--lora` (query + value, rank 64, alpha 128: run_gpt2_lora.yaml's adapter, B nonzero), one new
 * token, each a fresh process, alternating so that the machine's mood affects both alike. The
 * anchor is the same load without the adapter in the same run; decoding afterwards runs the same
 * merged weights on the same engine, so its speed is the plain model's (shown).
 *
 *   node dist/bench/lora-load.js [--backend wasm] [--runs 5]
 */
import { join } from 'node:path';
import { saveCheckpoint } from '../formats/checkpoint.js';
import { baseRefOf, saveLoraAdapter } from '../formats/peft.js';
import { parameterCount, presetConfig } from '../model/config.js';
import { initialLora, type LoraSpec } from '../model/lora.js';
import { initialParameters } from '../model/params.js';
import { fixed, flag, median, ROW, runTool, scratch } from './harness.js';

const backend = flag('--backend', 'wasm');
const runs = Number(flag('--runs', '5'));
const work = scratch('bench-lora-');
const model = join(work, 'gpt2');
const adapter = join(work, 'adapter');
const gpt2 = presetConfig('gpt2');
const spec: LoraSpec = { rank: 64, alpha: 128, dropout: 0.1, targets: ['query', 'value'] };
console.log(`bench:lora  gpt2 (${(parameterCount(gpt2) / 1e6).toFixed(1)}M, ${((parameterCount(gpt2) * 4) / 1e6).toFixed(0)} MB fp32) on ${backend}, adapter: ${spec.targets.join(' + ')}, rank ${spec.rank}; medians of ${runs} fresh processes each`);
await saveCheckpoint(model, gpt2, initialParameters(gpt2, 0));
const values = initialLora(gpt2, spec, 1);
for (const [name, v] of values) if (name.endsWith('lora_B')) v.data.forEach((_, k) => (v.data[k] = 0.01 * Math.sin(k))); // a trained adapter's B is not zero
await saveLoraAdapter(adapter, gpt2, spec, values, await baseRefOf(model));

type Stats = { load_ms: number; decode_tokens_per_s: number; rss: number };
function generate(extra: string[]): Stats {
  const args = ['-q', '--backend', backend, '--model', model, ...extra, '--input-format', 'ids', '--format', 'ids', '-n', '16', '--ignore-eos', '--stats'];
  const r = runTool('gpt2-generate', args, { input: '464 3290 286 1204 318\n' });
  if (!r.ok) throw new Error(`gpt2-generate failed: ${r.stderr}`);
  return { ...JSON.parse(r.stderr.split('\n').find((l) => l.startsWith('{'))!), rss: r.rssMB ?? NaN };
}

const plain: Stats[] = [];
const lora: Stats[] = [];
for (let r = 0; r < runs; r++) {
  plain.push(generate([]));
  lora.push(generate(['--lora', adapter]));
}
const row = (label: string, s: Stats[]) =>
  console.log(`${ROW(label)}load ${fixed(median(s.map((x) => x.load_ms)), 0, 5)} ms  decode ${fixed(median(s.map((x) => x.decode_tokens_per_s)))} tokens/s  peak RSS ${fixed(median(s.map((x) => x.rss)), 0, 4)} MB`);
row('plain (anchor)', plain);
row('--lora (merged at load)', lora);
const extra = median(lora.map((x) => x.load_ms)) - median(plain.map((x) => x.load_ms));
console.log(`the adapter adds ${extra.toFixed(0)} ms to the load (${(median(lora.map((x) => x.load_ms)) / median(plain.map((x) => x.load_ms))).toFixed(2)}× the anchor): sha256 of the base's weights on a thread of its own while they load, the merge (GEMM) as each is read`);
