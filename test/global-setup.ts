/**
 * CLI tests run the built tools (bin/ → dist/). Rebuild first when any source file is newer than
 * the build, so the suite never tests stale code.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

function newest(dir: string): number {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    t = Math.max(t, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
  }
  return t;
}

export default function setup(): void {
  const stamp = join(root, 'dist/tokenizer/gpt2.bin');
  if (!existsSync(stamp) || newest(join(root, 'src')) > statSync(stamp).mtimeMs) {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
  }
}
