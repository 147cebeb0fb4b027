/**
 * Just enough of a WebAssembly assembler to write a few SIMD kernels without a wasm toolchain:
 * one module importing a memory ("env", "memory") and exporting functions whose parameters are
 * i32. Functions are written as flat byte code through the Code builder below; the module is
 * checked by WebAssembly.validate when it is compiled.
 */

/** The WebAssembly API as far as we use it (Node has it; our lib settings, without DOM, do not declare it). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(pages: number): number;
}
export type WasmModule = object;
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: object) => { exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
}
export const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

export const I32 = 0x7f;
export const F32 = 0x7d;
export const V128 = 0x7b;

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (i32.const). */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const name = (s: string): number[] => vec([...Buffer.from(s, 'utf8')].map((b) => [b]));
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const simd = (op: number): number[] => [0xfd, ...uleb(op)];

/** A function body under construction; each method appends one instruction and returns this. */
export class Code {
  readonly bytes: number[] = [];
  private emit(...b: number[]): this {
    this.bytes.push(...b);
    return this;
  }
  get(i: number) { return this.emit(0x20, ...uleb(i)); }
  set(i: number) { return this.emit(0x21, ...uleb(i)); }
  tee(i: number) { return this.emit(0x22, ...uleb(i)); }
  i32(c: number) { return this.emit(0x41, ...sleb(c)); }
  add() { return this.emit(0x6a); }
  sub() { return this.emit(0x6b); }
  mul() { return this.emit(0x6c); }
  shl() { return this.emit(0x74); }
  and() { return this.emit(0x71); }
  or() { return this.emit(0x72); }
  eqz() { return this.emit(0x45); }
  eq() { return this.emit(0x46); }
  ltU() { return this.emit(0x49); }
  geU() { return this.emit(0x4f); }
  gtU() { return this.emit(0x4b); }
  /** Pops a, b, condition; pushes a if the condition is non-zero, else b. */
  select() { return this.emit(0x1b); }
  call(func: number) { return this.emit(0x10, ...uleb(func)); }
  /** block … end: `br depth` to it exits. */
  block() { return this.emit(0x02, 0x40); }
  /** loop … end: `br depth` to it starts the next iteration. */
  loop() { return this.emit(0x03, 0x40); }
  /** if … (else …) end on the popped condition. */
  if() { return this.emit(0x04, 0x40); }
  else() { return this.emit(0x05); }
  br(depth: number) { return this.emit(0x0c, ...uleb(depth)); }
  brIf(depth: number) { return this.emit(0x0d, ...uleb(depth)); }
  end() { return this.emit(0x0b); }
  f32Load(offset = 0) { return this.emit(0x2a, 2, ...uleb(offset)); }
  f32Store(offset = 0) { return this.emit(0x38, 2, ...uleb(offset)); }
  f32Const(x: number) { return this.emit(0x43, ...new Uint8Array(Float32Array.of(x).buffer)); }
  f32Add() { return this.emit(0x92); }
  v128Load(offset = 0) { return this.emit(...simd(0), 4, ...uleb(offset)); }
  /** v128.load32_splat: one float from memory in all four lanes (a broadcast load on x64). */
  v128Load32Splat(offset = 0) { return this.emit(...simd(9), 2, ...uleb(offset)); }
  v128Store(offset = 0) { return this.emit(...simd(11), 4, ...uleb(offset)); }
  v128Zero() { return this.emit(...simd(12), ...new Array<number>(16).fill(0)); }
  /** i8x16.shuffle of the two vectors on the stack: byte i of the result is byte lanes[i] of their 32. */
  i8x16Shuffle(lanes: number[]) { return this.emit(...simd(13), ...lanes); }
  /** Float `lane` of v128 local `v` in all four lanes (a shuffle of v with itself: one pshufd on x64). */
  f32x4SplatLane(v: number, lane: number) {
    const bytes = [0, 1, 2, 3].map((b) => 4 * lane + b);
    return this.get(v).get(v).i8x16Shuffle([...bytes, ...bytes, ...bytes, ...bytes]);
  }
  f32x4Splat() { return this.emit(...simd(19)); }
  f32x4Lane(lane: number) { return this.emit(...simd(31), lane); }
  f32x4Add() { return this.emit(...simd(228)); }
  f32x4Mul() { return this.emit(...simd(230)); }

  /** `local[i] += c` for an i32 local. */
  inc(i: number, c: number | (() => void)) {
    this.get(i);
    if (typeof c === 'number') this.i32(c);
    else c();
    return this.add().set(i);
  }
  /** `if (cond) { then } else { otherwise }`: `cond` pushes an i32. */
  ifElse(cond: () => void, then: () => void, otherwise?: () => void) {
    cond();
    this.if();
    then();
    if (otherwise) {
      this.else();
      otherwise();
    }
    return this.end();
  }
  /** Pushes the unsigned minimum of two i32 locals. */
  minU(x: number, y: number) {
    return this.get(x).get(y).get(x).get(y).ltU().select();
  }
  /** `while (!(exit condition)) { body }`: `exit` pushes an i32, true to leave. */
  whileNot(exit: () => void, body: () => void) {
    this.block().loop();
    exit();
    this.brIf(1);
    body();
    return this.br(0).end().end();
  }
}

export interface FunctionDef {
  name: string;
  params: number;
  /** Extra locals by type, in order after the parameters. */
  locals: { count: number; type: number }[];
  code: Code;
}

/** Whether a memory can be used by several threads (created with shared: true). */
export function isShared(memory: WasmMemory): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
}

/** Largest wasm32 memory, in 64 KiB pages (4 GiB); a shared memory must declare a maximum. */
export const MAX_PAGES = 65536;

/**
 * Compiles a module importing env.memory (shared, with maximum MAX_PAGES, if `shared`: what
 * threads need) and exporting `functions` (i32 parameters, no results).
 */
export function assemble(functions: FunctionDef[], shared = false): WasmModule {
  const types = functions.map((f) => [0x60, ...vec(new Array<number[]>(f.params).fill([I32])), 0]);
  const bytes = [
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec(types)),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, ...(shared ? [0x03, 0x00, ...uleb(MAX_PAGES)] : [0x00, 0x00])]])),
    ...section(3, vec(functions.map((_, i) => uleb(i)))),
    ...section(7, vec(functions.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]))),
    ...section(
      10,
      vec(
        functions.map((f) => {
          const body = [...vec(f.locals.map((l) => [...uleb(l.count), l.type])), ...f.code.bytes, 0x0b];
          return [...uleb(body.length), ...body];
        }),
      ),
    ),
  ];
  const binary = new Uint8Array(bytes);
  if (!wasmApi.validate(binary)) throw new Error('internal error: assembled wasm module does not validate');
  return new wasmApi.Module(binary);
}

/**
 * A module assembled on first use, once for unshared memories (the tfjs heap) and once for shared
 * ones, and its exports bound once per memory.
 */
export function lazyModule<T>(functions: () => FunctionDef[], bind: (exports: Record<string, unknown>) => T) {
  const compiled = new Map<boolean, WasmModule>();
  const instances = new WeakMap<WasmMemory, T>();
  const module = (shared: boolean): WasmModule => {
    let m = compiled.get(shared);
    if (m === undefined) compiled.set(shared, (m = assemble(functions(), shared)));
    return m;
  };
  const bound = (memory: WasmMemory): T => {
    let b = instances.get(memory);
    if (b === undefined) instances.set(memory, (b = bind(new wasmApi.Instance(module(isShared(memory)), { env: { memory } }).exports)));
    return b;
  };
  return { module, bound };
}
