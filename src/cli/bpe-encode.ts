/** bpe-encode: documents (one per line) → GPT-2 BPE token ids → msgpack record shards. */
import { availableParallelism } from 'node:os';
import { Option } from 'commander';
import type { DocSeparator } from '../tokenizer/documents.js';
import { checkInputs, chunkLines, readTextChunks } from '../util/input.js';
import { openOutput, writeStdout } from '../util/output.js';
// Each mode imports what it needs when it runs: start-up time is most of a small job.
import { choiceOption, createProgram, intArg, logger, runProgram, UsageError } from './common.js';
import { createProgress } from './progress.js';

interface Flags {
  out?: string;
  blockSize: number;
  docSeparator: DocSeparator;
  keepTail?: boolean;
  padId?: number;
  numShards?: number;
  shardRecords?: number;
  workers: number;
  tokenizer?: string;
  allowSpecial?: boolean;
  lossy?: boolean;
  overwrite?: boolean;
  ids?: boolean;
  decode?: boolean;
  inspect?: string;
  records: number;
  chunkBytes?: number;
  quiet?: boolean;
}

const program = createProgram({
  name: 'bpe-encode',
  summary: 'Encode documents (one per line) with GPT-2 byte-level BPE into msgpack record shards.',
  examples: [
    'wikitext-prep wiki.train.tokens | bpe-encode --block-size 1025 --out data/train',
    'bpe-encode --block-size 1024 --out data/valid valid.txt',
    'bpe-encode --doc-separator newline --num-shards 4 --out data/seedlike docs.txt',
    'echo "Hello world" | bpe-encode --ids          # 15496 995',
    'echo "15496 995" | bpe-encode --decode         # Hello world',
    'bpe-encode --inspect data/train',
  ],
  notes: `Records: the token stream of all documents, joined by --doc-separator (eos = <|endoftext|>, as
GPT-2 training does; newline = "\\n" as MindFormers' wikitext2_data_process.py does), cut into
non-overlapping blocks of --block-size tokens (1025 for training: inputs and shifted labels; 1024
for evaluation). DIR gets shard-NNNNN.msgpack files and manifest.json, written last; a directory
without a manifest is incomplete and every reader refuses it.`,
})
  .argument('[files...]', 'documents, one per line; "-" or none reads standard input')
  .option('-o, --out <path>', 'output directory for shards (with --ids/--decode: output file, default stdout)')
  .option('--block-size <n>', 'tokens per record', intArg('--block-size', 2, 2 ** 31 - 1), 1024)
  .addOption(choiceOption('--doc-separator <kind>', 'what goes between documents', ['eos', 'newline', 'none'], 'eos'))
  .option('--keep-tail', 'keep the last partial block, padded with --pad-id and masked')
  .option('--pad-id <id>', 'padding token for --keep-tail (default: <|endoftext|>)', intArg('--pad-id', 0))
  .option('--num-shards <n>', 'write n shards, records spread evenly (fewer, with a warning, if there are fewer records)', intArg('--num-shards', 1))
  .option('--shard-records <n>', 'records per shard (default: about 64 MiB a shard)', intArg('--shard-records', 1))
  .option('-j, --workers <n>', 'encoding threads (output is identical for any n)', intArg('--workers', 1, 256), availableParallelism())
  .option('--tokenizer <dir>', 'directory with vocab.json and merges.txt (default: built-in GPT-2)')
  .option('--allow-special', 'encode the text <|endoftext|> as the special token (default: as plain text)')
  .option('--lossy', 'replace invalid UTF-8 with U+FFFD (with a warning) instead of failing')
  .option('--overwrite', 'replace an output directory bpe-encode wrote before (nothing else)')
  .option('--ids', 'print the ids of each input line, space-separated, one line per line')
  .option('--decode', 'read lines of space-separated ids and print their text')
  .option('--inspect <dir>', 'verify a shard directory and print its summary and first records')
  .option('--records <n>', 'records to show with --inspect', intArg('--records', 0), 3)
  .addOption(new Option('--chunk-bytes <n>', 'bytes of input per unit of work').argParser(intArg('--chunk-bytes', 1)).hideHelp())
  .action(async (files: string[], flags: Flags) => {
    const log = logger('bpe-encode', !!flags.quiet);
    const modes = ['ids', 'decode', 'inspect'].filter((m) => flags[m as keyof Flags] !== undefined);
    if (modes.length > 1) throw new UsageError(`--${modes[0]} and --${modes[1]} cannot be combined`);
    if (flags.numShards !== undefined && flags.shardRecords !== undefined) throw new UsageError('give --num-shards or --shard-records, not both');

    if (flags.inspect !== undefined) {
      if (files.length > 0) throw new UsageError('--inspect takes no input files');
      const { inspectDataset } = await import('../data/inspect.js');
      const { loadTokenizer } = await import('../tokenizer/tokenizer.js');
      const tokenizer = loadTokenizer(flags.tokenizer);
      await writeStdout(await inspectDataset(flags.inspect, { records: flags.records, tokenizer }));
      return;
    }

    const total = checkInputs(files);
    if (flags.ids || flags.decode) {
      const { loadTokenizer } = await import('../tokenizer/tokenizer.js');
      const { formatIds, parseIds } = await import('../tokenizer/id-lines.js');
      const tokenizer = loadTokenizer(flags.tokenizer);
      const output = openOutput(flags.out, { inputs: files });
      try {
        for await (const chunk of readTextChunks(files, { lossy: flags.lossy, onWarning: log.warn })) {
          const lines = chunkLines(chunk.text);
          const out = lines.map((line, k) => {
            if (flags.ids) return formatIds(tokenizer.encode(line.endsWith('\r') ? line.slice(0, -1) : line, { allowSpecial: flags.allowSpecial }));
            return tokenizer.decode(parseIds(line, tokenizer.vocabSize, `${chunk.source}:${chunk.firstLine + k}`));
          });
          if (out.length > 0) await output.write(`${out.join('\n')}\n`);
        }
        await output.commit();
      } catch (err) {
        await output.abort();
        throw err;
      }
      return;
    }

    if (flags.out === undefined) throw new UsageError('--out DIR is required (or use --ids, --decode or --inspect)');
    const progress = await createProgress({ quiet: flags.quiet, total, label: 'bpe-encode', unit: 'bytes' });
    const started = performance.now();
    const { encodeDataset } = await import('../data/encode-dataset.js');
    let manifest;
    try {
      manifest = await encodeDataset({
        files,
        out: flags.out,
        overwrite: flags.overwrite,
        blockSize: flags.blockSize,
        docSeparator: flags.docSeparator,
        keepTail: flags.keepTail,
        padId: flags.padId,
        plan: { numShards: flags.numShards, shardRecords: flags.shardRecords },
        workers: flags.workers,
        tokenizerDir: flags.tokenizer,
        allowSpecial: flags.allowSpecial,
        lossy: flags.lossy,
        chunkBytes: flags.chunkBytes,
        expectedBytes: total,
        command: ['bpe-encode', ...process.argv.slice(2)],
        onWarning: log.warn,
        onBytes: (b) => progress.update(b),
      });
    } finally {
      progress.stop();
    }
    const seconds = (performance.now() - started) / 1000;
    const t = manifest.totals;
    log.info(`${flags.out}: ${t.records} records of ${manifest.block_size} tokens in ${manifest.shards.length} shard(s) from ${t.documents} documents (${(t.input_bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s, ${(t.input_bytes / 1e6 / seconds).toFixed(1)} MB/s)`);
  });

await runProgram(program);
