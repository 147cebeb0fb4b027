import { readFileSync } from 'node:fs';
import { pieceEnd, classAt } from './dist/tokenizer/pretokenize.js';
const bytes = readFileSync('/tmp/docs2.txt');
const text = bytes.toString('utf8');
// class table for ASCII bytes
const CLS = new Uint8Array(256);
for (let c = 0; c < 128; c++) CLS[c] = classAt(String.fromCharCode(c), 0);
for (let c = 128; c < 256; c++) CLS[c] = 9; // non-ASCII: general path
function pieceEndBytes(b, i, end) {
  const c = b[i];
  if (c !== 0x27 && c < 0x80) {
    let j = c === 0x20 ? i + 1 : i;
    if (j < end) {
      const cls = CLS[b[j]];
      if (cls !== 3 && cls !== 9) {
        j++;
        while (j < end && CLS[b[j]] === cls) j++;
        if (j === end || b[j] < 0x80) return j;
      }
    }
  }
  // crude general: skip one byte-run (not exact; timing only)
  let j = i + 1; while (j < end && (b[j] & 0xc0) === 0x80) j++; return j;
}
function hashBytes(b, s, e) { let h = 0x811c9dc5; for (let k = s; k < e; k++) h = Math.imul(h ^ b[k], 0x01000193); return h | 0; }
for (let pass = 0; pass < 4; pass++) {
  let t = performance.now(); let n = 0, x = 0;
  for (let i = 0; i < text.length; ) { const j = pieceEnd(text, i, text.length); x ^= hashRangeS(text, i, j); n++; i = j; }
  const a = performance.now() - t; t = performance.now(); let m = 0;
  for (let i = 0; i < bytes.length; ) { const j = pieceEndBytes(bytes, i, bytes.length); x ^= hashBytes(bytes, i, j); m++; i = j; }
  const b = performance.now() - t; t = performance.now();
  const s = bytes.toString('utf8'); const c = performance.now() - t;
  console.log('string scan+hash', a.toFixed(0), 'ms', n, '| bytes scan+hash', b.toFixed(0), 'ms', m, '| decode', c.toFixed(0), x & 1, s.length & 1);
}
function hashRangeS(text, s, e) { let h = 0x811c9dc5; for (let k = s; k < e; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193); return h | 0; }
