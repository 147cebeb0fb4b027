import { readFile } from 'node:fs/promises';
import { fsError, ToolError } from './errors.js';

/** A file's text parsed as JSON; a missing file or bad JSON is a ToolError naming the path. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw fsError(err, path);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ToolError(`${path}: not valid JSON (${(err as Error).message})`);
  }
}
