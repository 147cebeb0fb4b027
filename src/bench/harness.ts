/**
 * What every benchmark shares: flags, medians, running our CLIs in fresh processes with their peak
 * RSS, running the PyTorch anchors (src/bench/*_anchor.py) in a cleaned environment at 1 and 2
 * threads, FLOP counts, and the records and checkpoints a benchmark makes for both sides.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareWikitext } from '../data/wikitext.js';
import { writeDataset } from '../data/dataset-writer.js';
import { innerSize, type GPT2Config } from '../model/config.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { KernelPool } from '../backend/kernel-pool.js';
import { MAX_PAGES, wasmApi } from '../backend/wasm-asm.js';
import { GEMM_SCRATCH_BYTES } from '../backend/wasm-gemm.js';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

const argv = process.argv.slice(2);
/** The value after --name on the command line, else fallback. */
export const flag = (name: string, fallback: string): string => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
};
/** ../shared beside the checkout (CI's layout), or --shared DIR (a git worktree elsewhere). */
export const SHARED = resolve(flag('--shared', join(ROOT, '..', 'shared')));
const WIKITEXT = join(SHARED, 'data', 'wikitext-2');
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const fixed = (x: number, digits = 1, width = 7): string => x.toFixed(digits).padStart(width);
/** A row's label, padded so that the figures of every benchmark line up. */
export const ROW = (label: string): string => label.padEnd(26);

/** A scratch directory, removed on exit whatever happens. */
export function scratch(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface ToolRun {
  ok: boolean;
  status: number | null;
  stdout: string;
  stderr: string;
  wallS: number;
  /** Peak resident set of the process, from /usr/bin/time (undefined without it). */
  rssMB?: number;
}

const TIME = '/usr/bin/time';
const RSS_MARK = 'bench-maxrss-kb=';

/** A command in a fresh process, timed, its peak RSS taken by /usr/bin/time when present. */
export function runProcess(command: string, args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): ToolRun {
  const timed = existsSync(TIME);
  const t0 = performance.now();
  const r = spawnSync(timed ? TIME : command, timed ? ['-f', `${RSS_MARK}%M`, command, ...args] : args, {
    encoding: 'utf8',
    input: options.input,
    env: options.env ?? process.env,
    maxBuffer: 1 << 28,
  });
  const wallS = (performance.now() - t0) / 1000;
  const mark = new RegExp(`^${RSS_MARK}(\\d+)$`, 'm').exec(r.stderr ?? '');
  // time's own lines: the mark, and "Command exited with non-zero status N" (the status says it);
  // "Command terminated by signal N" stays, as the reason of a process killed (by the OOM killer, say).
  const stderr = (r.stderr ?? '').replace(new RegExp(`^(Command exited with .*\\n)?${RSS_MARK}\\d+\\n?`, 'm'), '');
  return { ok: r.status === 0, status: r.status, stdout: r.stdout ?? '', stderr: r.error ? `${r.error.message}\n${stderr}` : stderr, wallS, rssMB: mark ? Number(mark[1]) / 1024 : undefined };
}

/** One of our CLIs (bin/<tool>.js) in a fresh process. */
export const runTool = (tool: string, args: string[], options: { input?: string } = {}): ToolRun =>
  runProcess(process.execPath, [join(ROOT, 'bin', `${tool}.js`), ...args], options);

/** The line that says why a run failed: the first that looks like an error, else the last. */
export function firstErrorLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.find((l) => /error|abort|out of bounds|out of memory|killed|fatal|signal/i.test(l)) ?? lines.at(-1) ?? '(no message)';
}

// ------------------------------------------------------------------------------------------ FLOPs
/**
 * FLOPs of a forward pass per token at context `positions`: 2 per weight of the matrix products
 * (12·L·D² in attention and MLP when n_inner = 4D; 2·(4D² + 2·D·n_inner)·L in general), plus the
 * attention products QKᵀ and A·V over the whole T×T square (4·L·T·D; PyTorch computes it whole and
 * masks), plus the LM head's 2·V·D when `lmHead` (every position scored). Training counts 3× (the
 * backward pass does twice the forward's products). Element-wise work is not counted.
 */
export function forwardFlopsPerToken(c: GPT2Config, positions: number, lmHead: boolean): number {
  const d = c.n_embd;
  const blocks = 2 * c.n_layer * (4 * d * d + 2 * d * innerSize(c)) + 4 * c.n_layer * positions * d;
  return blocks + (lmHead ? 2 * c.vocab_size * d : 0);
}
export const FLOPS_FORMULA = 'forward per token = 2·L·(4D² + 2·D·n_inner) + 4·L·T·D + 2·V·D (LM head); a training step = 3 × forward × tokens';

// ---------------------------------------------------------------------------------------- anchors
/** The threads the anchors run at: the best of 1 and 2 is the anchor (the issue's rule). */
export const anchorThreads = (): number[] => flag('--anchor-threads', '1,2').split(',').map(Number);
const PYTHON = ['/usr/bin/python3', 'python3'].find((p) => !p.startsWith('/') || existsSync(p)) ?? 'python3';
const anchorScript = (name: string) => join(ROOT, 'src', 'bench', name);
/** Exit status of an anchor that refuses this machine's PyTorch (reference BLAS): see anchor.py. */
const REFUSED = 3;

/**
 * The anchor's environment: ours minus OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (set for other
 * work here, they slow OpenBLAS), every BLAS/OpenMP pool held to `threads` (torch's
 * set_num_threads does not reach a BLAS it was not built against, as Debian's generic one).
 */
export function anchorEnv(threads: number): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  for (const name of ['OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS']) env[name] = String(threads);
  return env;
}

export interface AnchorRun<T> {
  threads: number;
  /** The script's JSON line, and process_s: the whole process's wall time (Python, torch, loading). */
  result: T & { blas: string; mm512_gflops: number; max_rss_mb: number; process_s: number };
}
export type Anchor<T> = { runs: AnchorRun<T>[] } | { skipped: string };

/**
 * An anchor script at each of anchorThreads(), each in a fresh process. A machine that cannot
 * run it gives { skipped: why }, in one line.
 */
export function runAnchor<T>(script: string, args: object): Anchor<T> {
  const runs: AnchorRun<T>[] = [];
  for (const threads of anchorThreads()) {
    const r = runProcess(PYTHON, [anchorScript(script), JSON.stringify({ ...args, threads })], { env: anchorEnv(threads) });
    if (!r.ok) {
      const why = firstErrorLine(r.stderr);
      if (r.status === REFUSED) return { skipped: why };
      if (/No module named '(torch|numpy)'|ENOENT/.test(r.stderr)) return { skipped: `no ${PYTHON} with torch and numpy (make bench-deps installs them): ${why}` };
      return { skipped: `${script} failed at ${threads} threads: ${why}` };
    }
    runs.push({ threads, result: { ...JSON.parse(r.stdout.trim().split('\n').at(-1)!), process_s: r.wallS } });
  }
  return { runs };
}

type Result<T> = AnchorRun<T>['result'];
/**
 * Anchor rows: one per thread count, then the best by `score` (higher wins: the anchor is the best
 * of 1 and 2 threads) with ours as a ratio of it. Returns the best, or undefined when skipped.
 */
export function reportAnchor<T>(anchor: Anchor<T>, score: (r: Result<T>) => number, line: (r: Result<T>) => string, ours?: (best: Result<T>) => string): Result<T> | undefined {
  if ('skipped' in anchor) {
    console.log(`PyTorch anchor cannot run: ${anchor.skipped}`);
    return undefined;
  }
  const best = anchor.runs.reduce((a, b) => (score(b.result) > score(a.result) ? b : a));
  for (const r of anchor.runs) console.log(`${ROW(`  PyTorch ${r.threads} thread${r.threads > 1 ? 's' : ''}`)}${line(r.result)}`);
  console.log(`${ROW(`  PyTorch best (${best.threads})`)}${line(best.result)}${ours ? `  → ${ours(best.result)}` : ''}`);
  return best.result;
}

/** The anchor's BLAS, once per benchmark. */
export function describeAnchor<T>(anchor: Anchor<T>): void {
  if ('skipped' in anchor) return;
  const { blas, mm512_gflops } = anchor.runs[0].result;
  console.log(`PyTorch anchor: ${blas} (512² mm ${mm512_gflops.toFixed(0)} GFLOPS at ${anchor.runs[0].threads} thread${anchor.runs[0].threads > 1 ? 's' : ''} in the same run)`);
}

// ------------------------------------------------------------------------------------ the records
/**
 * `count` records of `blockSize` GPT-2 ids: WikiText-2 (`split`, cleaned into documents as
 * wikitext-prep does, joined by <|endoftext|> as bpe-encode does) when ../shared has it, else a
 * fixed synthetic sequence. Says which.
 */
export function benchIds(split: 'train' | 'valid' | 'test', count: number, blockSize: number): { ids: Int32Array; source: string } {
  const need = count * blockSize;
  const path = join(WIKITEXT, `wiki.${split}.tokens`);
  if (existsSync(path)) {
    const tokenizer = loadTokenizer();
    const ids: number[] = [];
    for (const doc of prepareWikitext(readFileSync(path, 'utf8'))) {
      ids.push(...tokenizer.encode(doc), tokenizer.eosId!);
      if (ids.length >= need) return { ids: Int32Array.from(ids.slice(0, need)), source: `WikiText-2 ${split}` };
    }
  }
  const ids = Int32Array.from({ length: need }, (_, k) => (k * 104729 + 7919) % 50257);
  return { ids, source: `synthetic ids (${path} not found)` };
}

/** The records as shards for our CLIs (dir) and as raw int32 for the anchor (returned: dir.i32). */
export async function writeRecords(dir: string, ids: Int32Array, blockSize: number): Promise<string> {
  const tokenizer = loadTokenizer().identity;
  await writeDataset(dir, ids, {
    blockSize,
    dtype: 'uint16',
    padId: 50256,
    keepTail: false,
    tokenizer,
    docSeparator: 'eos',
    plan: {},
    documents: 1,
    inputBytes: 0,
    command: ['bench'],
  });
  writeFileSync(`${dir}.i32`, new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
  return `${dir}.i32`;
}

/**
 * Our GEMM alone on a 1024³ product (operands out of cache between calls, as in a pass), on
 * `threads` threads, GFLOPS, median of 5 after a warm-up: what a pass's products can reach here,
 * now, to set a benchmark's GFLOPS beside.
 */
export function gemmGflops(threads: number): number {
  const n = 1024;
  const bytes = 4 * n * n;
  const memory = new wasmApi.Memory({ initial: Math.ceil((3 * bytes + threads * GEMM_SCRATCH_BYTES) / 65536), maximum: MAX_PAGES, shared: true });
  new Float32Array(memory.buffer, 0, 2 * n * n).fill(0.5);
  const pool = new KernelPool(memory, threads);
  try {
    const times: number[] = [];
    for (let r = 0; r < 6; r++) {
      const t0 = performance.now();
      pool.gemm({ m: n, n, k: n, a: 0, lda: n, b: bytes, ldb: n, c: 2 * bytes, ldc: n }, 3 * bytes);
      if (r > 0) times.push(performance.now() - t0);
    }
    return (2 * n ** 3) / median(times) / 1e6;
  } finally {
    pool.close();
  }
}
