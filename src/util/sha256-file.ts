/** sha256 of a whole file, for identities (an adapter's base, the input of a split encoding). */
import { Worker } from 'node:worker_threads';
import { fsError } from './errors.js';

/**
 * Hashes a file on a thread of its own, so that checking a base overlaps loading it: synchronous
 * reads into one 16 MiB buffer (a read stream's chunks cost ~0.2 s of allocation and GC on 500 MB).
 */
const HASHER = `
const { workerData, parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const hash = require('node:crypto').createHash('sha256');
const buffer = Buffer.allocUnsafe(1 << 24);
try {
  const fd = fs.openSync(workerData, 'r');
  for (let n; (n = fs.readSync(fd, buffer, 0, buffer.length, null)) > 0; ) hash.update(buffer.subarray(0, n));
  fs.closeSync(fd);
  parentPort.postMessage({ sha256: hash.digest('hex') });
} catch (err) {
  parentPort.postMessage({ code: err.code, message: err.message });
}
`;

export function sha256OfFile(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(HASHER, { eval: true, workerData: path });
    worker.once('message', (m: { sha256?: string; code?: string; message?: string }) => {
      void worker.terminate();
      if (m.sha256) resolve(m.sha256);
      else reject(fsError(Object.assign(new Error(m.message), { code: m.code }), path));
    });
    worker.once('error', (err) => reject(fsError(err, path)));
  });
}
