/**
 * Output safety of the data tools and convert-weights, run as a user would: --overwrite replaces
 * only what the tool itself made (and every refusal leaves inputs and directory byte-for-byte as
 * they were), an output file is never one of the inputs, stdout write errors are one line, and
 * staging left by a killed process is tidied by the next run.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, cpSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { beforeAll, describe, expect, it } from 'vitest';
import { ShardDataset } from '../../src/data/shard-reader.js';
import { deadPid, expectOneLineError, fixture, ROOT, runCli, tempDir, type CliResult } from '../helpers.js';
import { snapshot } from '../util/snapshot.js';

const work = tempDir();
let n = 0;
const fresh = (name: string) => join(work, `${name}-${n++}`);
const tokenizerDir = join(ROOT, 'src', 'tokenizer', 'gpt2');

/** Runs a tool with stdout going to an open file descriptor (/dev/full, a file opened for append, …). */
function runTo(fd: number, tool: string, args: string[], input = ''): CliResult {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', `${tool}.js`), ...args], { input, cwd: ROOT, stdio: ['pipe', fd, 'pipe'] });
  return { code: r.status ?? -1, stdout: '', stderr: r.stderr.toString('utf8'), stdoutBytes: Buffer.alloc(0) };
}

/** Runs `run`, which must be refused; everything under `dirs` must be exactly as it was. */
function refusedUntouched(dirs: string[], run: () => CliResult, tool: string, pattern: RegExp, code = 1): void {
  const before = dirs.map(snapshot);
  expectOneLineError(run(), tool, pattern, code);
  expect(dirs.map(snapshot)).toEqual(before);
}

let docs: string; // one document per line
let docLines: string[];
let encoded: string; // a previous bpe-encode output
let converted: string; // a previous convert-weights output

beforeAll(() => {
  const prep = runCli('wikitext-prep', ['-q', fixture('wikitext', 'wiki.valid.tokens')]);
  expect(prep.code, prep.stderr).toBe(0);
  docs = join(work, 'docs.txt');
  writeFileSync(docs, prep.stdout);
  docLines = prep.stdout.trimEnd().split('\n');
  encoded = join(work, 'encoded');
  expect(runCli('bpe-encode', ['-q', '--block-size', '64', '--out', encoded, docs]).code).toBe(0);
  converted = join(work, 'converted');
  expect(runCli('convert-weights', ['-q', fixture('models', 'tiny'), converted]).code).toBe(0);
});

/** A copy of a previous output at a fresh path: one --overwrite would replace if nothing else stood in the way. */
function copyOf(template: string, name: string): string {
  const dir = fresh(name);
  cpSync(template, dir, { recursive: true });
  return dir;
}

describe('bpe-encode --overwrite', () => {
  it("--out '' is a usage error and the current directory is untouched", () => {
    const cwd = copyOf(encoded, 'cwd');
    refusedUntouched([cwd, dirname(docs)], () => runCli('bpe-encode', ['--overwrite', '--out', '', docs], { cwd }), 'bpe-encode', /the output directory is an empty path/, 2);
  });

  it('--out . (the current directory, even one holding a previous output) is refused', () => {
    const cwd = copyOf(encoded, 'cwd');
    refusedUntouched([cwd], () => runCli('bpe-encode', ['--overwrite', '--out', '.', docs], { cwd }), 'bpe-encode', /\.: refusing to replace the current directory/);
    refusedUntouched([cwd], () => runCli('bpe-encode', ['--overwrite', '--out', dirname(cwd), docs], { cwd }), 'bpe-encode', /current directory \(it is inside it\)/);
  });

  it('--out DIR with the input inside DIR, by name or through a symlink, is refused', () => {
    const dir = copyOf(encoded, 'holds-input');
    copyFileSync(docs, join(dir, 'docs.txt'));
    refusedUntouched([dir], () => runCli('bpe-encode', ['-q', '--overwrite', '--out', dir, join(dir, 'docs.txt')]), 'bpe-encode', /it holds .*docs\.txt, an input of this command/);
    const linked = copyOf(encoded, 'linked-input');
    const link = join(fresh('links'), 'shard.txt');
    mkdirSync(dirname(link));
    symlinkSync(join(linked, 'shard-00000.msgpack'), link); // an input that is one of the directory's own files
    refusedUntouched([linked, dirname(link)], () => runCli('bpe-encode', ['-q', '--lossy', '--overwrite', '--out', linked, link]), 'bpe-encode', /it holds .*shard\.txt, an input of this command/);
  });

  it('--tokenizer inside DIR is refused', () => {
    const dir = copyOf(encoded, 'holds-tokenizer');
    mkdirSync(join(dir, 'tok'));
    for (const f of ['vocab.json', 'merges.txt']) copyFileSync(join(tokenizerDir, f), join(dir, 'tok', f));
    refusedUntouched([dir], () => runCli('bpe-encode', ['-q', '--overwrite', '--tokenizer', join(dir, 'tok'), '--out', dir, docs]), 'bpe-encode', /it holds .*tok, an input of this command/);
  });

  it('a directory holding a file bpe-encode did not write, or a directory under a shard name, is refused', () => {
    const dir = copyOf(encoded, 'foreign');
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    refusedUntouched([dir], () => runCli('bpe-encode', ['-q', '--overwrite', '--out', dir, docs]), 'bpe-encode', /not replacing it with --overwrite: it holds notes\.txt, which bpe-encode does not write/);
    const nested = copyOf(encoded, 'nested');
    mkdirSync(join(nested, 'shard-00001.msgpack'));
    writeFileSync(join(nested, 'shard-00001.msgpack', 'data.bin'), 'mine');
    refusedUntouched([nested], () => runCli('bpe-encode', ['-q', '--overwrite', '--out', nested, docs]), 'bpe-encode', /its shard-00001\.msgpack is a directory/);
  });

  it('replaces a previous bpe-encode output, leaving no staging behind', async () => {
    const parent = fresh('replace');
    const dir = copyOf(encoded, 'x');
    mkdirSync(parent);
    cpSync(dir, join(parent, 'out'), { recursive: true });
    const r = runCli('bpe-encode', ['-q', '--overwrite', '--block-size', '32', '--out', join(parent, 'out'), docs]);
    expect(r.code, r.stderr).toBe(0);
    expect((await ShardDataset.open(join(parent, 'out'))).blockSize).toBe(32);
    expect(readdirSync(parent)).toEqual(['out']);
  });
});

/** The dtype of every tensor in a safetensors file, from its header (8-byte length, JSON). */
function dtypes(path: string): string[] {
  const bytes = readFileSync(path);
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<string, { dtype?: string }>;
  return [...new Set(Object.entries(header).filter(([k]) => k !== '__metadata__').map(([, v]) => String(v.dtype)))];
}

describe('convert-weights --overwrite', () => {
  const src = fixture('models', 'tiny');

  it('DST . (the current directory, even one holding a previous output) is refused', () => {
    const cwd = copyOf(converted, 'cwd');
    refusedUntouched([cwd], () => runCli('convert-weights', ['--overwrite', src, '.'], { cwd }), 'convert-weights', /\.: refusing to replace the current directory/);
  });

  it('SRC SRC is refused, though SRC is a checkpoint of ours', () => {
    const dir = copyOf(converted, 'self');
    refusedUntouched([dir], () => runCli('convert-weights', ['--overwrite', dir, dir]), 'convert-weights', /refusing to replace it: it is an input of this command/);
  });

  it('an input reached through a symlink into DST, or --config inside DST, is refused', () => {
    const dir = copyOf(converted, 'linked');
    const outside = fresh('outside');
    mkdirSync(outside);
    symlinkSync(join(dir, 'model.safetensors'), join(outside, 'weights.safetensors'));
    refusedUntouched([dir, outside], () => runCli('convert-weights', ['--overwrite', '--config', join(src, 'config.json'), join(outside, 'weights.safetensors'), dir]), 'convert-weights', /it holds .*weights\.safetensors, an input/);
    refusedUntouched([dir], () => runCli('convert-weights', ['--overwrite', '--config', join(dir, 'config.json'), src, dir]), 'convert-weights', /it holds .*config\.json, an input/);
  });

  it('a Hugging Face directory without our marker is refused', () => {
    const hf = fresh('hf');
    mkdirSync(hf);
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(src, f), join(hf, f));
    for (const f of ['vocab.json', 'merges.txt']) copyFileSync(join(tokenizerDir, f), join(hf, f));
    refusedUntouched([hf], () => runCli('convert-weights', ['--overwrite', src, hf]), 'convert-weights', /not replacing it with --overwrite: it has no model\.safetensors written by this toolchain/);
  });

  it('a previous output with an extra file, or a symlink under one of our names, is refused', () => {
    const dir = copyOf(converted, 'extra');
    writeFileSync(join(dir, 'README.md'), 'notes');
    refusedUntouched([dir], () => runCli('convert-weights', ['--overwrite', src, dir]), 'convert-weights', /it holds README\.md, which this toolchain does not write/);
    const linked = copyOf(converted, 'symlinked');
    const elsewhere = copyOf(converted, 'elsewhere');
    rmSync(join(linked, 'vocab.json'));
    symlinkSync(join(elsewhere, 'vocab.json'), join(linked, 'vocab.json'));
    refusedUntouched([linked, elsewhere], () => runCli('convert-weights', ['--overwrite', src, linked]), 'convert-weights', /its vocab\.json is a symbolic link/);
  });

  it('the home directory is refused, though it holds a previous output', () => {
    const home = copyOf(converted, 'home');
    refusedUntouched([home], () => runCli('convert-weights', ['--overwrite', src, home], { env: { HOME: home } }), 'convert-weights', /refusing to replace a home directory/);
  });

  it('replaces a previous convert-weights output', () => {
    const parent = fresh('replace');
    mkdirSync(parent);
    cpSync(converted, join(parent, 'out'), { recursive: true });
    expect(dtypes(join(parent, 'out', 'model.safetensors'))).toEqual(['F32']);
    const r = runCli('convert-weights', ['-q', '--overwrite', '--dtype', 'f16', src, join(parent, 'out')]);
    expect(r.code, r.stderr).toBe(0);
    expect(dtypes(join(parent, 'out', 'model.safetensors'))).toEqual(['F16']);
    expect(readdirSync(parent)).toEqual(['out']);
  });
});

describe('an output file that is an input is refused before anything is written', () => {
  const setup = () => {
    const dir = fresh('same');
    mkdirSync(dir);
    copyFileSync(docs, join(dir, 'x'));
    symlinkSync(join(dir, 'x'), join(dir, 'soft'));
    linkSync(join(dir, 'x'), join(dir, 'hard'));
    return dir;
  };

  it('wikitext-prep --out x x, through a symlink or a hard link, and x >> x', () => {
    const dir = setup();
    for (const out of ['x', 'soft', 'hard']) {
      refusedUntouched([dir], () => runCli('wikitext-prep', ['--out', join(dir, out), join(dir, 'x')]), 'wikitext-prep', new RegExp(`${out}: refusing to write over .*x, an input of this command`));
    }
    refusedUntouched(
      [dir],
      () => {
        const fd = openSync(join(dir, 'x'), 'a');
        try {
          return runTo(fd, 'wikitext-prep', [join(dir, 'hard')]);
        } finally {
          closeSync(fd);
        }
      },
      'wikitext-prep',
      /<stdout>: refusing to write over .*hard, an input/,
    );
  });

  it("--out '' is a usage error", () => {
    const dir = setup();
    refusedUntouched([dir], () => runCli('wikitext-prep', ['--out', '', join(dir, 'x')], { cwd: dir }), 'wikitext-prep', /the output file is an empty path/, 2);
    refusedUntouched([dir], () => runCli('bpe-encode', ['--ids', '--out', '', join(dir, 'x')], { cwd: dir }), 'bpe-encode', /the output file is an empty path/, 2);
  });

  it('bpe-encode --ids --out x x, and through links', () => {
    const dir = setup();
    for (const out of ['x', 'soft', 'hard']) {
      refusedUntouched([dir], () => runCli('bpe-encode', ['--ids', '--out', join(dir, out), join(dir, 'x')]), 'bpe-encode', /refusing to write over .*x, an input of this command/);
    }
    refusedUntouched([dir], () => runCli('bpe-encode', ['--decode', '--out', join(dir, 'soft'), join(dir, 'hard')]), 'bpe-encode', /refusing to write over/);
  });
});

describe('stdout write errors: one line, exit 1; a closed pipe: quiet exit 0', () => {
  const toFull = (tool: string, args: string[], input = '') => {
    const fd = openSync('/dev/full', 'w');
    try {
      return runTo(fd, tool, args, input);
    } finally {
      closeSync(fd);
    }
  };

  it('wikitext-prep and bpe-encode --ids / --decode / --inspect to /dev/full', () => {
    expectOneLineError(toFull('wikitext-prep', [docs]), 'wikitext-prep', /^wikitext-prep: error: <stdout>: no space left on device$/);
    expectOneLineError(toFull('bpe-encode', ['--ids', docs]), 'bpe-encode', /<stdout>: no space left on device/);
    expectOneLineError(toFull('bpe-encode', ['--decode'], '15496 995\n'), 'bpe-encode', /<stdout>: no space left on device/);
    expectOneLineError(toFull('bpe-encode', ['--inspect', encoded]), 'bpe-encode', /<stdout>: no space left on device/);
  });

  it('output that does not go through writeStdout (commander’s --help, --version)', () => {
    expectOneLineError(toFull('wikitext-prep', ['--help']), 'wikitext-prep', /^wikitext-prep: error: <stdout>: no space left on device$/);
    expectOneLineError(toFull('convert-weights', ['--version']), 'convert-weights', /<stdout>: no space left on device/);
  });

  it('gpt2-train plot to /dev/full', () => {
    const run = fresh('run');
    mkdirSync(run);
    writeFileSync(join(run, 'metrics.jsonl'), '{"step":1,"loss":5}\n{"step":2,"loss":4}\n');
    expectOneLineError(toFull('gpt2-train', ['plot', run]), 'gpt2-train', /<stdout>: no space left on device/);
  });

  it('`wikitext-prep | head -c 100` ends quietly with status 0', () => {
    const big = join(work, 'big.tokens');
    writeFileSync(big, readFileSync(fixture('wikitext', 'wiki.train.tokens'), 'utf8').repeat(8)); // more than a pipe holds
    const r = spawnSync('bash', ['-c', `"${process.execPath}" bin/wikitext-prep.js -q "${big}" | head -c 100 > /dev/null; echo "\${PIPESTATUS[0]}"`], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stdout.trim()).toBe('0');
    expect(r.stderr).toBe('');
  });
});

describe('staging left by a process killed with -9 is removed by the next run', () => {
  it('wikitext-prep --out: the dead run’s temporary goes, a live process’s stays', async () => {
    const dir = fresh('killed');
    mkdirSync(dir);
    const out = join(dir, 'docs.txt');
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'wikitext-prep.js'), '-q', '--out', out, '-'], { stdio: ['pipe', 'ignore', 'ignore'] });
    child.stdin.write(' = Title = \n text \n');
    const temp = await new Promise<string>((resolve, reject) => {
      const poll = setInterval(() => {
        const found = readdirSync(dir).find((f) => f.startsWith('.docs.txt.tmp-'));
        if (found) {
          clearInterval(poll);
          resolve(found);
        }
      }, 20);
      child.on('exit', () => {
        clearInterval(poll);
        reject(new Error('wikitext-prep exited before staging its output'));
      });
    });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    expect(temp).toMatch(new RegExp(`^\\.docs\\.txt\\.tmp-${child.pid}-[0-9a-f]{8}$`));
    const live = `.docs.txt.tmp-${process.pid}-0123abcd`;
    writeFileSync(join(dir, live), 'being written by a live process');
    expect(readdirSync(dir).sort()).toEqual([temp, live].sort());

    const r = runCli('wikitext-prep', ['-q', '--out', out, fixture('wikitext', 'wiki.valid.tokens')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(dir).sort()).toEqual([live, 'docs.txt'].sort());
  });

  it('bpe-encode --out: staged and moved-aside directories of dead processes go', () => {
    const parent = fresh('stale');
    mkdirSync(parent);
    const out = join(parent, 'shards');
    cpSync(encoded, out, { recursive: true });
    const dead = deadPid();
    for (const name of [`.shards.tmp-${dead}-0123abcd`, `.shards.old-${dead}-89abcdef`, `.shards.tmp-${process.pid}-0123abcd`]) cpSync(encoded, join(parent, name), { recursive: true });
    const r = runCli('bpe-encode', ['-q', '--overwrite', '--block-size', '64', '--out', out, docs]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(parent).sort()).toEqual([`.shards.tmp-${process.pid}-0123abcd`, 'shards']);
  });
});

describe('bpe-encode --num-shards beyond the record count', () => {
  it('warns, naming both numbers, and writes one record a shard', async () => {
    const tiktoken = new Tiktoken(gpt2Ranks);
    const tokens = docLines.flatMap((d, i) => [...(i > 0 ? [50256] : []), ...tiktoken.encode(d, [], [])]).length;
    const records = Math.floor(tokens / 64);
    expect(records).toBeLessThan(500);
    const out = fresh('capped');
    const r = runCli('bpe-encode', ['--num-shards', '500', '--block-size', '64', '--out', out, docs]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`bpe-encode: warning: --num-shards 500 is more than the ${records} records; writing ${records} shards\n`);
    const dataset = await ShardDataset.open(out);
    expect(dataset.manifest.shards.map((s) => s.records)).toEqual(Array(records).fill(1));
    expect(readdirSync(out)).toHaveLength(records + 1);
  });
});
