/** Everything under a directory, byte for byte, to prove a refused command left it untouched. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (path: string, rel: string) => {
    const stats = lstatSync(path);
    if (stats.isSymbolicLink()) out[rel] = `link → ${readlinkSync(path)}`;
    else if (stats.isDirectory()) {
      out[rel] = `dir ${stats.mode.toString(8)}`;
      for (const name of readdirSync(path).sort()) walk(join(path, name), rel ? `${rel}/${name}` : name);
    } else out[rel] = `file ${stats.mode.toString(8)} ${stats.size} ${stats.ino} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
  };
  walk(dir, '');
  return out;
}
