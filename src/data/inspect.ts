/** A human-readable summary of a record-shard directory (bpe-encode --inspect). */
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { ShardDataset } from './shard-reader.js';

export async function inspectDataset(dir: string, options: { records: number; tokenizer?: Tokenizer; verify?: boolean }): Promise<string> {
  const dataset = await ShardDataset.open(dir, { verify: options.verify === false ? 'size' : 'checksum' });
  if (options.verify !== false) await dataset.verifyAll();
  const m = dataset.manifest;
  const lines = [
    `${dir}: ${m.format} v${m.version}${options.verify === false ? '' : ', all checksums OK'}`,
    `tokenizer   ${m.tokenizer.name} (vocab ${m.tokenizer.vocab_size}, sha256 ${m.tokenizer.sha256.slice(0, 12)}…)`,
    `block size  ${m.block_size} (${m.id_dtype}), fields ${m.fields.join(', ')}, separator ${m.doc_separator}, pad ${m.pad_id}`,
    `records     ${m.totals.records} in ${m.shards.length} shard(s), ${m.totals.tokens} tokens, ${m.totals.bytes} bytes`,
    `source      ${m.totals.documents} documents, ${m.totals.input_bytes} bytes of text`,
    `made by     ${m.created_by.command.join(' ')} (${m.created_by.tool} ${m.created_by.version})`,
  ];
  const tokenizer = options.tokenizer?.identity.sha256 === m.tokenizer.sha256 ? options.tokenizer : undefined;
  if (options.tokenizer && !tokenizer) lines.push(`(records not decoded: they belong to tokenizer ${m.tokenizer.name}, not ${options.tokenizer.identity.name}; pass --tokenizer DIR)`);
  for (const s of m.shards) lines.push(`  ${s.file}  ${s.records} records  ${s.tokens} tokens  ${s.bytes} bytes  sha256 ${s.sha256.slice(0, 12)}…`);
  let shown = 0;
  for await (const { record, shard, index } of dataset.iterate()) {
    if (shown++ >= options.records) break;
    const real = record.attention_mask.reduce((a, b) => a + b, 0);
    lines.push('', `record ${shown - 1} (shard ${shard}, index ${index}): ${real}/${record.input_ids.length} tokens`);
    const ids = Array.from(record.input_ids.subarray(0, real));
    lines.push(`  ids   ${ids.slice(0, 16).join(' ')}${ids.length > 16 ? ' …' : ''}`);
    if (tokenizer) lines.push(`  text  ${JSON.stringify(tokenizer.decode(ids.slice(0, 64)))}${ids.length > 64 ? ' …' : ''}`);
  }
  return `${lines.join('\n')}\n`;
}
