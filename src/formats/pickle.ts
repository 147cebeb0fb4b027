/**
 * A restricted unpickler: it reads the opcodes of pickle protocols 2–5 that torch.save emits and
 * builds plain data (numbers, strings, arrays, PyDicts). Whatever a pickle would import or call
 * goes through the caller's hooks, which accept a short list of names and refuse the rest, so
 * nothing in a pickle can ever run. Opcodes outside that set (the text protocols, INST/OBJ,
 * extension codes, out-of-band buffers) are refused by name and byte offset.
 */
import { ToolError } from '../util/errors.js';

/** A Python dict or OrderedDict, keys in insertion order; `state` is what BUILD set (OrderedDict's `_metadata`). */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
  state: unknown = undefined;
}

export interface UnpickleHooks {
  /** GLOBAL / STACK_GLOBAL: a token for an allowed name; throws the refusal otherwise. */
  findClass(module: string, name: string): unknown;
  /** REDUCE and NEWOBJ: `callable` is a token from findClass (or anything a damaged pickle put there). */
  call(callable: unknown, args: unknown[]): unknown;
  /** BUILD: sets `state` on `obj`. */
  build(obj: unknown, state: unknown): void;
  /** BINPERSID. */
  persistentLoad(pid: unknown): unknown;
}

export interface PickleSource {
  /** Names the file (and archive member) in messages. */
  path: string;
  member?: string;
  /** Added to offsets in messages: where `bytes` starts in the file (legacy) or member (zip). */
  base?: number;
}

/** Thrown when the pickle runs past the end of the bytes: the caller may read more and retry. */
export class PickleTruncated extends ToolError {}

const decoder = new TextDecoder('utf-8');

/** Unpickles one pickle starting at `start`; returns its value and the offset just past STOP. */
export function unpickle(bytes: Uint8Array, hooks: UnpickleHooks, src: PickleSource, start = 0): { value: unknown; end: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = (offset: number) => `at byte ${offset + (src.base ?? 0)}${src.member ? ` of ${src.member}` : ''}`;
  const damaged = (what: string, offset: number): never => {
    throw new ToolError(`${src.path}: damaged pickle: ${what} ${at(offset)}`);
  };
  let pos = start;
  let opAt = start;
  const need = (n: number): number => {
    if (n > bytes.length - pos) throw new PickleTruncated(`${src.path}: truncated pickle: the data ends ${at(bytes.length)}, before the pickle's STOP`);
    const p = pos;
    pos += n;
    return p;
  };
  const u8 = () => bytes[need(1)];
  const u16 = () => view.getUint16(need(2), true);
  const u32 = () => view.getUint32(need(4), true);
  const u64 = () => {
    const v = view.getBigUint64(need(8), true);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? damaged('impossible length', opAt) : Number(v);
  };
  const raw = (n: number) => bytes.subarray(need(n), pos);
  const text = (n: number) => decoder.decode(raw(n));
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw new PickleTruncated(`${src.path}: truncated pickle: the data ends ${at(bytes.length)}, before the pickle's STOP`);
    const s = decoder.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const long = (n: number): number | bigint => {
    const b = raw(n);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (n > 0 && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };

  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  const pop = (): unknown => (stack.length ? stack.pop() : damaged('stack underflow', opAt));
  const top = (): unknown => (stack.length ? stack[stack.length - 1] : damaged('stack underflow', opAt));
  const popMark = (): unknown[] => {
    const items = stack;
    stack = marks.pop() ?? damaged('no MARK to pop to', opAt);
    return items;
  };
  const get = (i: number) => (memo.has(i) ? memo.get(i) : damaged(`memo entry ${i} is used before it is stored`, opAt));
  const setItems = (dict: unknown, items: unknown[]) => {
    if (!(dict instanceof PyDict)) damaged('SETITEM on something that is not a dict', opAt);
    for (let i = 0; i + 1 < items.length; i += 2) (dict as PyDict).map.set(items[i], items[i + 1]);
  };
  const append = (list: unknown, items: unknown[]) => {
    if (!Array.isArray(list)) damaged('APPEND on something that is not a list', opAt);
    (list as unknown[]).push(...items);
  };

  for (;;) {
    opAt = pos;
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) damaged(`pickle protocol ${v} is newer than 5`, opAt);
        break;
      }
      case 0x95: u64(); break; // FRAME: a length hint only
      case 0x2e: return { value: pop(), end: pos }; // STOP
      case 0x28: marks.push(stack); stack = []; break; // MARK
      case 0x7d: stack.push(new PyDict()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(view.getInt32(need(4), true)); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: stack.push(long(u8())); break; // LONG1
      case 0x8b: { // LONG4
        const n = view.getInt32(need(4), true);
        if (n < 0) damaged('negative LONG4 length', opAt);
        stack.push(long(n));
        break;
      }
      case 0x47: stack.push(view.getFloat64(need(8), false)); break; // BINFLOAT (big-endian)
      case 0x58: stack.push(text(u32())); break; // BINUNICODE
      case 0x8c: stack.push(text(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(text(u64())); break; // BINUNICODE8
      case 0x54: { // BINSTRING (Python 2 str; torch.load decodes these as UTF-8)
        const n = view.getInt32(need(4), true);
        if (n < 0) damaged('negative BINSTRING length', opAt);
        stack.push(text(n));
        break;
      }
      case 0x55: stack.push(text(u8())); break; // SHORT_BINSTRING
      case 0x42: stack.push(raw(u32()).slice()); break; // BINBYTES
      case 0x43: stack.push(raw(u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: stack.push(raw(u64()).slice()); break; // BINBYTES8
      case 0x85: stack.push([pop()]); break; // TUPLE1
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x74: // TUPLE
      case 0x6c: { // LIST
        const items = popMark(); // before naming `stack`: popMark replaces it
        stack.push(items);
        break;
      }
      case 0x64: { // DICT
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: stack.push(get(u8())); break; // BINGET
      case 0x6a: stack.push(get(u32())); break; // LONG_BINGET
      case 0x32: stack.push(top()); break; // DUP
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line();
        stack.push(hooks.findClass(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') damaged('STACK_GLOBAL without two strings', opAt);
        stack.push(hooks.findClass(module as string, name as string));
        break;
      }
      case 0x52: // REDUCE
      case 0x81: { // NEWOBJ
        const args = pop();
        const callable = pop();
        if (!Array.isArray(args)) damaged('call arguments are not a tuple', opAt);
        stack.push(hooks.call(callable, args as unknown[]));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        hooks.build(top(), state);
        break;
      }
      case 0x51: stack.push(hooks.persistentLoad(pop())); break; // BINPERSID
      default: {
        const printable = op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : '';
        throw new ToolError(`${src.path}: unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}${printable} ${at(opAt)}`);
      }
    }
  }
}
