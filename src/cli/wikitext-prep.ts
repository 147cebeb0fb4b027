/** wikitext-prep: WikiText files → one cleaned document per line. */
import { InvalidArgumentError } from 'commander';
import { DocumentAssembler, type PrepOptions, type SplitMode, type UnkMode } from '../data/wikitext.js';
import { checkInputs, readTextChunks } from '../util/input.js';
import { openOutput } from '../util/output.js';
import { choiceOption, createProgram, intArg, logger, runProgram } from './common.js';
import { createProgress } from './progress.js';

interface Flags {
  out?: string;
  split: SplitMode;
  clean: boolean;
  unk: UnkMode;
  minChars: number;
  lossy?: boolean;
  quiet?: boolean;
}

function parseUnk(value: string): UnkMode {
  if (value === 'keep' || value === 'drop') return { kind: value };
  if (value.startsWith('replace=')) return { kind: 'replace', with: value.slice('replace='.length) };
  throw new InvalidArgumentError('--unk must be keep, drop or replace=STRING');
}

const program = createProgram({
  name: 'wikitext-prep',
  summary: 'Turn WikiText-2/103 files (wiki.*.tokens or wiki.*.raw) into one cleaned document per line.',
  examples: [
    'wikitext-prep wiki.train.tokens > train.txt',
    'wikitext-prep wiki.valid.tokens | bpe-encode --block-size 1024 --out data/valid',
    'wikitext-prep --split sections --unk drop --out docs.txt wiki.test.tokens',
    'cat wiki.train.raw | wikitext-prep --no-clean --min-chars 200 -',
  ],
  notes: `Documents: --split articles (default) makes one document per top-level " = Title = " article
(sub-heading lines are dropped, their text kept); --split sections ends a document at every heading,
as MindFormers' wikitext2_data_process.py does (but keeps the file's last passage, which it loses).
Cleaning applies MindFormers' wikitext_clean rules in order (" @-@ " → "-", " , " → ", ", quote and
bracket trimming, ...) to each line; lines of a document are joined with single spaces.`,
})
  .argument('[files...]', 'WikiText files; "-" or none reads standard input')
  .option('-o, --out <file>', 'write documents to this file (default: standard output)')
  .addOption(choiceOption('--split <mode>', 'document boundaries', ['articles', 'sections'], 'articles'))
  .option('--no-clean', 'keep the text exactly as in the file (no wikitext_clean rules)')
  .option('--unk <mode>', 'what to do with <unk>: keep, drop, or replace=STRING', parseUnk, { kind: 'keep' } as UnkMode)
  .option('--min-chars <n>', 'drop documents shorter than n characters', intArg('--min-chars', 0), 0)
  .option('--lossy', 'replace invalid UTF-8 with U+FFFD (with a warning) instead of failing')
  .action(async (files: string[], flags: Flags) => {
    const log = logger('wikitext-prep', !!flags.quiet);
    const total = checkInputs(files);
    const options: PrepOptions = { split: flags.split, clean: flags.clean, unk: flags.unk, minChars: flags.minChars };
    const output = openOutput(flags.out, { inputs: files });
    const progress = await createProgress({ quiet: flags.quiet, total, label: 'wikitext-prep', unit: 'bytes' });
    let documents = 0;
    try {
      for (const file of files.length === 0 ? ['-'] : files) {
        const assembler = new DocumentAssembler(options); // a new file starts a new document
        for await (const chunk of readTextChunks([file], { lossy: flags.lossy, onWarning: log.warn, onBytes: (b) => progress.update(b) })) {
          const docs = assembler.push(chunk.bytes);
          if (docs.length > 0) await output.write(docs);
        }
        const docs = assembler.finish();
        if (docs.length > 0) await output.write(docs);
        documents += assembler.documents;
      }
      await output.commit();
    } catch (err) {
      await output.abort();
      throw err;
    } finally {
      progress.stop();
    }
    if (documents === 0) log.warn('no documents in the input');
    log.info(`${documents} documents`);
  });

await runProgram(program);
