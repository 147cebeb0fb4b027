/**
 * The tokenizer a GGUF file embeds ↔ Hugging Face's vocab.json + merges.txt, which every tool here
 * loads from a directory (worker threads and checkpoints included).
 *
 * GGUF → files: vocab.json and merges.txt are made as Hugging Face saves them (Python's
 * json.dumps: ", " and ": ", non-ASCII as \uXXXX; merges.txt with its "#version: 0.2" line), so a
 * GGUF holding GPT-2's tokenizer gives byte-for-byte GPT-2's files: its identity is GPT-2's and
 * the built-in directory is used, nothing is written. Any other tokenizer is written once into a
 * directory named by its sha256 under $GPT2_TOOLCHAIN_HOME/tokenizers (the files are checked
 * against that name whenever it is reused). Ids no token has (UNUSED padding) are left out.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsError, ToolError } from '../util/errors.js';
import { tempPathFor } from '../util/staging.js';
import { builtinTokenizerDir, GPT2_TOKENIZER_SHA256 } from '../tokenizer/tokenizer.js';
import { parseVocabFiles, tokenizerSha256 } from '../tokenizer/vocab-files.js';
import { modelsHome } from '../model/source.js';

/** The GGUF tokenizer: vocab.json's strings by id, their types, merges.txt's lines. */
export interface GgufTokenizer {
  tokens: string[];
  types: number[];
  merges: string[];
}

/** gguf-py's TokenType. */
export const TOKEN_NORMAL = 1;
export const TOKEN_CONTROL = 3;
export const TOKEN_UNUSED = 5;

const MERGES_HEADER = '#version: 0.2';

/** A JSON string as Python's json.dumps writes it (ensure_ascii: everything outside printable ASCII escaped). */
const pythonJsonString = (s: string) => JSON.stringify(s).replace(/[^\x20-\x7e]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** vocab.json and merges.txt for a GGUF tokenizer, in Hugging Face's formatting. */
export function tokenizerFiles(tok: GgufTokenizer): { vocab: string; merges: string } {
  const entries: string[] = [];
  tok.tokens.forEach((token, id) => {
    if (tok.types[id] !== TOKEN_UNUSED) entries.push(`${pythonJsonString(token)}: ${id}`);
  });
  return { vocab: `{${entries.join(', ')}}`, merges: [MERGES_HEADER, ...tok.merges].map((line) => `${line}\n`).join('') };
}

/**
 * A tokenizer directory's vocab.json + merges.txt (GPT-2's when `dir` is undefined) as GGUF's
 * lists, for a model of `vocabSize` ids: special tokens (neither a byte nor made by a merge) are
 * CONTROL, ids no token has are "[PAD<id>]" and UNUSED, as llama.cpp's converter writes them.
 */
export async function ggufTokenizerFromDir(dir: string | undefined, vocabSize: number): Promise<GgufTokenizer> {
  const root = dir ?? builtinTokenizerDir();
  const read = (name: string) => readFile(join(root, name)).catch((err) => {
    throw fsError(err, join(root, name));
  });
  const [vocab, merges] = await Promise.all([read('vocab.json'), read('merges.txt')]);
  const tables = parseVocabFiles({ vocab, merges, vocabName: join(root, 'vocab.json'), mergesName: join(root, 'merges.txt') });
  if (tables.vocabSize > vocabSize) {
    throw new ToolError(`${root}: its tokenizer has ${tables.vocabSize} ids but the model only ${vocabSize}; GGUF embeds the model's own tokenizer: give SRC its vocab.json and merges.txt`);
  }
  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(JSON.parse(vocab.toString('utf8')) as Record<string, number>)) byId.set(id, token);
  const specials = new Set(tables.specials.values());
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    const token = byId.get(id);
    tokens.push(token ?? `[PAD${id}]`);
    types.push(token === undefined ? TOKEN_UNUSED : specials.has(id) ? TOKEN_CONTROL : TOKEN_NORMAL);
  }
  const mergeLines = merges.toString('utf8').split('\n').filter((line, i) => line !== '' && !(i === 0 && line.startsWith('#version')));
  return { tokens, types, merges: mergeLines };
}

/** Where the tokenizers of GGUF files live as files: $GPT2_TOOLCHAIN_HOME/tokenizers. */
export const tokenizersHome = () => join(dirname(modelsHome()), 'tokenizers');

/** A directory with the GGUF tokenizer's vocab.json + merges.txt: GPT-2's built-in one, or one written once by content. */
export async function tokenizerDirFor(tok: GgufTokenizer, where: string): Promise<string> {
  const files = tokenizerFiles(tok);
  const sha256 = tokenizerSha256(files.vocab, files.merges);
  if (sha256 === GPT2_TOKENIZER_SHA256) return builtinTokenizerDir();
  parseVocabFiles({ vocab: files.vocab, merges: files.merges, vocabName: `${where} (tokenizer.ggml.tokens)`, mergesName: `${where} (tokenizer.ggml.merges)` });
  const dir = join(tokenizersHome(), sha256);
  const stored = await Promise.all(['vocab.json', 'merges.txt'].map((name) => readFile(join(dir, name)).catch(() => undefined)));
  if (stored[0] && stored[1] && tokenizerSha256(stored[0], stored[1]) === sha256) return dir;
  // Staged whole and renamed, so a directory under this name is complete (a racing writer's is the same).
  const staged = tempPathFor(dir);
  try {
    await mkdir(staged, { recursive: true });
    await writeFile(join(staged, 'vocab.json'), files.vocab);
    await writeFile(join(staged, 'merges.txt'), files.merges);
    await rm(dir, { recursive: true, force: true });
    await rename(staged, dir);
  } catch (err) {
    await rm(staged, { recursive: true, force: true });
    throw fsError(err, dir);
  }
  return dir;
}
