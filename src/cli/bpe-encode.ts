/**
 * bpe-encode: documents (one per line) → GPT-2 BPE token ids → msgpack record shards; or labelled
 * rows (TSV, CSV, JSON Lines) → classification records.
 */
import { availableParallelism } from 'node:os';
import { Option } from 'commander';
import type { TruncationSide } from '../data/encode-labelled.js';
import type { LabelledFormat } from '../data/labelled-input.js';
import type { DocSeparator } from '../tokenizer/documents.js';
import { mainEncodes, prestartEncoders } from '../tokenizer/encoder-threads.js';
import { checkInputs, chunkLines, readTextChunks, STDIN } from '../util/input.js';
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
  inputFormat: 'text' | LabelledFormat;
  textColumn?: string[];
  labelColumn?: string;
  textSeparator: string;
  header: boolean;
  labels?: string;
  maxLength: number;
  truncationSide: TruncationSide;
  skipBad?: boolean;
  part?: string;
  merge?: string[];
}

/** Flags of one kind of input only: text (a causal LM's blocks) or labelled rows. */
const TEXT_ONLY = ['blockSize', 'docSeparator', 'keepTail', 'part'] as const;
const LABELLED_ONLY = ['textColumn', 'labelColumn', 'textSeparator', 'header', 'labels', 'maxLength', 'truncationSide', 'skipBad'] as const;
const flagName = (key: string) => (key === 'header' ? '--no-header' : `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);

const program = createProgram({
  name: 'bpe-encode',
  summary: 'Encode documents (one per line), or labelled rows for a classifier, with GPT-2 byte-level BPE into msgpack record shards.',
  examples: [
    'wikitext-prep wiki.train.tokens | bpe-encode --block-size 1025 --out data/train',
    'bpe-encode --block-size 1024 --out data/valid valid.txt',
    'bpe-encode --doc-separator newline --num-shards 4 --out data/seedlike docs.txt',
    'echo "Hello world" | bpe-encode --ids          # 15496 995',
    'echo "15496 995" | bpe-encode --decode         # Hello world',
    'bpe-encode --input-format tsv --text-column sentence --label-column label --max-length 128 --out data/sst2-dev dev.tsv',
    'bpe-encode --input-format csv --no-header --text-column 1 --text-column 2 --label-column 0 --out data/ag-news train.csv',
    'bpe-encode --inspect data/train',
    'for k in 1 2 3 4; do bpe-encode --block-size 1025 --part $k/4 --out parts/$k train.txt & done; wait; bpe-encode --merge parts/* --out data/train',
  ],
  notes: `Records: the token stream of all documents, joined by --doc-separator (eos = <|endoftext|>, as
GPT-2 training does; newline = "\\n" as MindFormers' wikitext2_data_process.py does), cut into
non-overlapping blocks of --block-size tokens (1025 for training: inputs and shifted labels; 1024
for evaluation). DIR gets shard-NNNNN.msgpack files and manifest.json, written last; a directory
without a manifest is incomplete and every reader refuses it.

Labelled rows (--input-format tsv|csv|jsonl): one record per row, the text's ids (the
--text-column values joined by --text-separator, cut to --max-length tokens) and the label's id,
unpadded. TSV/CSV files start with a header line unless --no-header; a column is a header name
or a 0-based index. TSV splits on tabs with no quoting; CSV is RFC 4180. Labels are --labels in
that order, else the distinct values sorted (numerically if all are numbers: 1..4 → ids 0..3).
A bad row (ragged, missing column, empty text or label, label not in --labels, invalid JSON) is
an error naming file and line; --skip-bad leaves such rows out and counts them.

Split across processes or machines: --part K/N (1-based) encodes the lines of the one input file
that start in its K-th of N equal byte slices into a part directory (ids.bin: the slice's token
stream; part.json: the input's size and sha256, the options, the counts); --merge PART_DIR…
checks that the parts are 1/N…N/N of the same file and options and writes the data set — shard
for shard the bytes one run on the whole file writes. Parts can run anywhere that sees the file
(make -j, xargs -P, GNU parallel, Slurm arrays, Kubernetes Indexed Jobs).`,
})
  .argument('[files...]', 'documents, one per line, or labelled rows; "-" or none reads standard input')
  .option('-o, --out <path>', 'output directory for shards (with --ids/--decode: output file, default stdout)')
  .option('--block-size <n>', 'tokens per record', intArg('--block-size', 2, 2 ** 31 - 1), 1024)
  .addOption(choiceOption('--doc-separator <kind>', 'what goes between documents', ['eos', 'newline', 'none'], 'eos'))
  .option('--keep-tail', 'keep the last partial block, padded with --pad-id and masked')
  .option('--pad-id <id>', 'padding token for --keep-tail, and for a classifier\'s batches (default: <|endoftext|>)', intArg('--pad-id', 0))
  .option('--num-shards <n>', 'write n shards, records spread evenly (fewer, with a warning, if there are fewer records)', intArg('--num-shards', 1))
  .option('--shard-records <n>', 'records per shard (default: about 64 MiB a shard)', intArg('--shard-records', 1))
  .option('-j, --workers <n>', 'encoding threads (output is identical for any n)', intArg('--workers', 1, 256), availableParallelism())
  .option('--tokenizer <dir>', 'directory with vocab.json and merges.txt (default: built-in GPT-2)')
  .option('--allow-special', 'encode the text <|endoftext|> as the special token (default: as plain text)')
  .option('--lossy', 'replace invalid UTF-8 with U+FFFD (with a warning) instead of failing')
  .option('--overwrite', 'replace an output directory bpe-encode wrote before (nothing else)')
  .option('--ids', 'print the ids of each input line, space-separated, one line per line')
  .option('--decode', 'read lines of space-separated ids and print their text')
  .option('--part <K/N>', 'encode only the lines of the one input file that start in its K-th of N byte slices, into a part directory (--out)')
  .option('--merge <dirs...>', 'join part directories 1/N…N/N into the data set one run on the whole file writes (--out)')
  .option('--inspect <dir>', 'verify a shard directory and print its summary and first records')
  .option('--records <n>', 'records to show with --inspect', intArg('--records', 0), 3)
  .addOption(choiceOption('--input-format <format>', 'text: documents, one per line (a causal LM\'s blocks); tsv, csv, jsonl: labelled rows (classification)', ['text', 'tsv', 'csv', 'jsonl'], 'text'))
  .option('--text-column <col>', 'labelled: a text column (name or 0-based index; repeat to join several)', (v: string, all: string[] | undefined) => [...(all ?? []), v])
  .option('--label-column <col>', 'labelled: the label column (name or 0-based index)')
  .option('--text-separator <str>', 'labelled: what joins several text columns (the seed\'s AG-News join)', '. ')
  .option('--no-header', 'labelled TSV/CSV: the first line is a row, not column names')
  .option('--labels <a,b,...>', 'labelled: label names in id order (default: the distinct labels, sorted)')
  .option('--max-length <n>', 'labelled: keep at most n tokens of a text', intArg('--max-length', 1, 2 ** 31 - 1), 1024)
  .addOption(choiceOption('--truncation-side <side>', 'labelled: right keeps a long text\'s start, left its end', ['right', 'left'], 'right'))
  .option('--skip-bad', 'labelled: leave out bad rows (counted on stderr) instead of failing')
  .addOption(new Option('--chunk-bytes <n>', 'bytes of input per unit of work').argParser(intArg('--chunk-bytes', 1)).hideHelp())
  .action(async (files: string[], flags: Flags) => {
    const log = logger('bpe-encode', !!flags.quiet);
    const modes = ['ids', 'decode', 'inspect'].filter((m) => flags[m as keyof Flags] !== undefined);
    if (modes.length > 1) throw new UsageError(`--${modes[0]} and --${modes[1]} cannot be combined`);
    if (flags.numShards !== undefined && flags.shardRecords !== undefined) throw new UsageError('give --num-shards or --shard-records, not both');

    if (flags.merge !== undefined) {
      if (files.length > 0 || flags.part !== undefined) throw new UsageError('--merge takes part directories only: no input files or --part');
      if (flags.out === undefined) throw new UsageError('--merge needs --out DIR');
      const { mergeParts } = await import('../data/parts.js');
      const { replaceableRecords } = await import('../data/manifest.js');
      const overwrite = flags.overwrite ? replaceableRecords(flags.merge) : undefined;
      const command = ['bpe-encode', ...process.argv.slice(2)];
      const { result: m, seconds } = await withProgress(flags.quiet, undefined, (onBytes, onTotal) => mergeParts(flags.merge!, flags.out!, { overwrite, command, onWarning: log.warn, onBytes, onTotal }));
      log.info(`${flags.out}: ${m.totals.records} records of ${m.block_size} tokens in ${m.shards.length} shard(s) from ${m.totals.documents} documents, merged from ${flags.merge.length} parts in ${seconds.toFixed(2)} s`);
      return;
    }

    if (flags.inspect !== undefined) {
      if (files.length > 0) throw new UsageError('--inspect takes no input files');
      const { inspectDataset } = await import('../data/inspect.js');
      const { loadTokenizer } = await import('../tokenizer/tokenizer.js');
      const tokenizer = loadTokenizer(flags.tokenizer);
      await writeStdout(await inspectDataset(flags.inspect, { records: flags.records, tokenizer }));
      return;
    }

    const given = (keys: readonly string[]) => keys.filter((k) => program.getOptionValueSource(k) === 'cli');
    const labelled = flags.inputFormat !== 'text';
    const misplaced = given(labelled ? TEXT_ONLY : LABELLED_ONLY);
    if (misplaced.length > 0) {
      const why = labelled ? 'is for text input (a causal LM\'s blocks); labelled rows are cut by --max-length' : 'needs --input-format tsv, csv or jsonl';
      throw new UsageError(`${flagName(misplaced[0])} ${why}`);
    }
    if (labelled && (flags.ids || flags.decode)) throw new UsageError(`--${flags.ids ? 'ids' : 'decode'} reads text lines, not --input-format ${flags.inputFormat}`);

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
    const fromFiles = files.length > 0 && !files.includes(STDIN);
    if (!labelled && (!fromFiles || total! > (flags.chunkBytes ?? 1 << 18))) {
      // The threads the pool will want: they boot while the encoder's modules and the tokenizer
      // load (see encoder-threads.ts).
      prestartEncoders(mainEncodes(flags.workers, !fromFiles) ? flags.workers - 1 : flags.workers);
    }
    const common = {
      files,
      out: flags.out,
      overwrite: flags.overwrite,
      padId: flags.padId,
      plan: { numShards: flags.numShards, shardRecords: flags.shardRecords },
      tokenizerDir: flags.tokenizer,
      allowSpecial: flags.allowSpecial,
      lossy: flags.lossy,
      command: ['bpe-encode', ...process.argv.slice(2)],
      onWarning: log.warn,
    };
    if (labelled) {
      if (flags.labelColumn === undefined) throw new UsageError(`--input-format ${flags.inputFormat} needs --label-column NAME|INDEX`);
      const { encodeLabelled, parseLabels } = await import('../data/encode-labelled.js');
      const { result: m, seconds } = await withProgress(flags.quiet, total, (onBytes) =>
        encodeLabelled({
          ...common,
          format: flags.inputFormat as LabelledFormat,
          textColumns: flags.textColumn ?? [],
          labelColumn: flags.labelColumn!,
          textSeparator: flags.textSeparator,
          header: flags.header,
          labels: flags.labels === undefined ? undefined : parseLabels(flags.labels),
          maxLength: flags.maxLength,
          truncationSide: flags.truncationSide,
          skipBad: flags.skipBad,
          onBytes,
        }),
      );
      const t = m.totals;
      const counts = m.labels.map((l, k) => `${l} ×${t.label_counts[k]}`).join(', ');
      log.info(`${flags.out}: ${t.records} records (${counts}), ${t.tokens} tokens, in ${m.shards.length} shard(s) (${(t.input_bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s)`);
      return;
    }
    const { encodeDataset, encodePart } = await import('../data/encode-dataset.js');
    const text = {
      ...common,
      blockSize: flags.blockSize,
      docSeparator: flags.docSeparator,
      keepTail: flags.keepTail,
      workers: flags.workers,
      chunkBytes: flags.chunkBytes,
      expectedBytes: total,
    };
    if (flags.part !== undefined) {
      const { parsePart } = await import('../util/parts.js');
      const part = parsePart(flags.part);
      const { result: p, seconds } = await withProgress(flags.quiet, undefined, (onBytes, onInputBytes) => encodePart({ ...text, part, onBytes, onInputBytes }));
      log.info(`${flags.out}: part ${p.part}, ${p.documents} documents, ${p.tokens} tokens (bytes ${p.slice.start}–${p.slice.end} of ${p.input.file}, in ${seconds.toFixed(2)} s); join the parts with bpe-encode --merge`);
      return;
    }
    const { result: m, seconds } = await withProgress(flags.quiet, total, (onBytes) => encodeDataset({ ...text, onBytes }));
    const t = m.totals;
    log.info(`${flags.out}: ${t.records} records of ${m.block_size} tokens in ${m.shards.length} shard(s) from ${t.documents} documents (${(t.input_bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s, ${(t.input_bytes / 1e6 / seconds).toFixed(1)} MB/s)`);
  });

/**
 * Runs an encode under a progress bar over the input bytes (a part learns its total, its slice,
 * once it has found the slice's line boundaries); returns what it made and the seconds it took.
 */
async function withProgress<R>(quiet: boolean | undefined, total: number | undefined, encode: (onBytes: (bytes: number) => void, onTotal: (bytes: number) => void) => Promise<R>): Promise<{ result: R; seconds: number }> {
  const progress = await createProgress({ quiet, total, label: 'bpe-encode', unit: 'bytes' });
  const started = performance.now();
  try {
    const result = await encode((b) => progress.update(b), (t) => progress.setTotal(t));
    return { result, seconds: (performance.now() - started) / 1000 };
  } finally {
    progress.stop();
  }
}

await runProgram(program);
