/** A human-readable summary of a record-shard directory (bpe-encode --inspect). */
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { Manifest } from './manifest.js';
import { openShards, requireTask } from './shard-reader.js';

/** The manifest lines that differ by task. */
function shapeLines(m: Manifest): string[] {
  if (m.task === 'causal_lm') return [`block size  ${m.block_size} (${m.id_dtype}), fields ${m.fields.join(', ')}, separator ${m.doc_separator}, pad ${m.pad_id}`];
  const t = m.totals;
  return [
    `task        classification, ${m.num_labels} labels: ${m.labels.map((l, k) => `${k}=${JSON.stringify(l)} (${t.label_counts[k]} records)`).join(', ')}`,
    `max length  ${m.max_length} (${m.id_dtype}, unpadded; truncation side ${m.truncation_side}), fields ${m.fields.join(', ')}, pad ${m.pad_id}`,
    `rows        ${t.truncated} truncated, ${t.skipped} skipped as bad`,
  ];
}

export async function inspectDataset(dir: string, options: { records: number; tokenizer?: Tokenizer; verify?: boolean }): Promise<string> {
  const dataset = await openShards(dir, { verify: options.verify === false ? 'size' : 'checksum' });
  if (options.verify !== false) await dataset.verifyAll();
  const m = dataset.manifest;
  const lines = [
    `${dir}: ${m.format} v${m.version}${options.verify === false ? '' : ', all checksums OK'}`,
    `tokenizer   ${m.tokenizer.name} (vocab ${m.tokenizer.vocab_size}, sha256 ${m.tokenizer.sha256.slice(0, 12)}…)`,
    ...shapeLines(m),
    `records     ${m.totals.records} in ${m.shards.length} shard(s), ${m.totals.tokens} tokens, ${m.totals.bytes} bytes`,
    m.task === 'causal_lm' ? `source      ${m.totals.documents} documents, ${m.totals.input_bytes} bytes of text` : `source      ${m.totals.input_bytes} bytes of rows`,
    `made by     ${m.created_by.command.join(' ')} (${m.created_by.tool} ${m.created_by.version})`,
  ];
  const tokenizer = options.tokenizer?.identity.sha256 === m.tokenizer.sha256 ? options.tokenizer : undefined;
  if (options.tokenizer && !tokenizer) lines.push(`(records not decoded: they belong to tokenizer ${m.tokenizer.name}, not ${options.tokenizer.identity.name}; pass --tokenizer DIR)`);
  for (const s of m.shards) lines.push(`  ${s.file}  ${s.records} records  ${s.tokens} tokens  ${s.bytes} bytes  sha256 ${s.sha256.slice(0, 12)}…`);
  const show = (n: number, where: string, real: number, length: number, ids: number[], label?: string) => {
    lines.push('', `record ${n} (${where}): ${real}/${length} tokens${label === undefined ? '' : `, label ${label}`}`);
    lines.push(`  ids   ${ids.slice(0, 16).join(' ')}${ids.length > 16 ? ' …' : ''}`);
    if (tokenizer) lines.push(`  text  ${JSON.stringify(tokenizer.decode(ids.slice(0, 64)))}${ids.length > 64 ? ' …' : ''}`);
  };
  let shown = 0;
  if (dataset.task === 'classification') {
    const labelled = requireTask(dataset, 'classification', 'inspect');
    for await (const { record, shard, index } of labelled.iterate()) {
      if (shown >= options.records) break;
      const ids = Array.from(record.input_ids);
      show(shown++, `shard ${shard}, index ${index}`, ids.length, labelled.manifest.max_length, ids, `${record.label} ${JSON.stringify(labelled.manifest.labels[record.label])}`);
    }
  } else {
    for await (const { record, shard, index } of requireTask(dataset, 'causal_lm', 'inspect').iterate()) {
      if (shown >= options.records) break;
      const real = record.attention_mask.reduce((a, b) => a + b, 0);
      show(shown++, `shard ${shard}, index ${index}`, real, record.input_ids.length, Array.from(record.input_ids.subarray(0, real)));
    }
  }
  return `${lines.join('\n')}\n`;
}
