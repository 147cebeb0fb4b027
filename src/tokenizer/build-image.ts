/**
 * Build step: writes dist/tokenizer/gpt2.bin, the binary image of the built-in GPT-2 tables.
 * Run by `npm run build` (and so by `npm ci` through "prepare").
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { serializeTables } from './compiled.js';
import { builtinImagePath, builtinTokenizerDir, GPT2_TOKENIZER_SHA256, Tokenizer } from './tokenizer.js';
import { parseVocabFiles } from './vocab-files.js';

const dir = builtinTokenizerDir();
const tables = parseVocabFiles({ vocab: readFileSync(join(dir, 'vocab.json')), merges: readFileSync(join(dir, 'merges.txt')) });
if (tables.sha256 !== GPT2_TOKENIZER_SHA256) {
  throw new Error(`built-in tokenizer files do not match GPT-2's (sha256 ${tables.sha256})`);
}
const out = builtinImagePath();
const seedCache = new Tokenizer(tables, 'gpt2').seedPieceCache();
writeFileSync(`${out}.tmp`, serializeTables({ ...tables, seedCache }));
renameSync(`${out}.tmp`, out);
