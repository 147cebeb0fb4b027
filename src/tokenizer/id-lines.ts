/** The text form of token ids used by `bpe-encode --ids` / `--decode`: one line, ids separated by spaces. */
import { ToolError } from '../util/errors.js';

export const formatIds = (ids: ArrayLike<number>): string => Array.prototype.join.call(ids, ' ');

/** Parses one line of ids; `where` ("file:line") prefixes errors. */
export function parseIds(line: string, vocabSize: number, where: string): number[] {
  const text = line.trim();
  if (text === '') return [];
  return text.split(/\s+/).map((word, k) => {
    if (!/^\d+$/.test(word)) throw new ToolError(`${where}: ${JSON.stringify(word)} (item ${k + 1}) is not a token id`);
    const id = Number(word);
    if (id >= vocabSize) throw new ToolError(`${where}: token id ${id} is not in the vocabulary (size ${vocabSize})`);
    return id;
  });
}
