/**
 * Training configs: YAML files that may `extends:` a parent, `--set key.path=value` overrides, and
 * validation whose messages name the file (or the --set) that gave the offending value and its key
 * path. The schema and defaults live in config-schema.ts.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { COLLECTION_STYLE, DUMP_SCHEMA, YAMLException, dump, load, loadAll, visit, type ScalarTagDefinition } from 'js-yaml';
import type { GPT2Config } from '../model/config.js';
import { ToolError, UsageError, fsError } from '../util/errors.js';
import { DEFAULT_SHAPE, FieldError, checkTrainConfig, formatPath, isMapping, listCapacity, type Path, type TrainConfig } from './config-schema.js';

export {
  DEFAULT_SHAPE, LORA_TARGETS, LR_SCHEDULE_TYPES, MODEL_CONFIG_KEYS, TASKS, resolveModelConfig,
} from './config-schema.js';
export type { LoraTarget, LrScheduleType, Path, Task, TrainConfig } from './config-schema.js';

/** Where each value came from: key path → file name or `--set …`, so errors blame the right place. */
type Origins = Map<string, string>;

/** Validates a parsed config (a YAML file's, or one stored in a checkpoint) and fills defaults. */
export function validateTrainConfig(raw: unknown, where: string): TrainConfig {
  return validate(raw, () => where);
}

/** Loads a YAML config (following `extends:` chains), applies `--set` overrides, validates. */
export function loadTrainConfig(path: string, overrides: readonly string[] = []): TrainConfig {
  return loadTrainConfigWithSources(path, overrides).config;
}

/** A loaded config and, for messages, where a key's value came from (a file name or `--set …`). */
export interface SourcedConfig {
  config: TrainConfig;
  sourceOf(key: Path): string;
  /** The config files read: the file and its `extends:` ancestors. */
  files: string[];
}

export function loadTrainConfigWithSources(path: string, overrides: readonly string[] = []): SourcedConfig {
  const origins: Origins = new Map();
  const raw: Record<string, unknown> = {};
  const chain = readChain(path, []);
  for (const layer of chain) mergeInto(raw, layer.data, [], layer.name, origins);
  for (const assignment of overrides) {
    const { path: keyPath, value } = parseAssignment(assignment);
    setOrigin(origins, setAt(raw, keyPath, value), `--set ${assignment}`);
  }
  const sourceOf = (p: Path) => {
    for (let n = p.length; n > 0; n--) {
      const source = origins.get(formatPath(p.slice(0, n)));
      if (source !== undefined) return source;
    }
    return path;
  };
  return { config: validate(raw, sourceOf), sourceOf, files: chain.map((layer) => layer.name) };
}

/**
 * Applies one `key.path=value` assignment ("optimizer.betas[1]=0.98", "eval_dataset=null") to a raw
 * config. The value is read as YAML (scalars and flow collections). A malformed assignment is a
 * UsageError; an unknown key or a wrong type is left for validation to report.
 */
export function applyOverride(raw: Record<string, unknown>, assignment: string): void {
  const { path, value } = parseAssignment(assignment);
  setAt(raw, path, value);
}

/** The effective config as YAML, in schema order; loading it back gives the same config. */
export function configToYaml(config: TrainConfig): string {
  return dump(config, {
    schema: DUMP_SCHEMA.withTags(floatTag),
    lineWidth: -1,
    noRefs: true,
    // Short scalar lists (betas, target_modules) read better inline.
    transform: (docs) =>
      visit(docs, (node) => {
        if (node.kind === 'sequence' && node.items.every((item) => item.kind === 'scalar')) node.style = COLLECTION_STYLE.FLOW;
      }),
  });
}

// js-yaml writes 1e-8 as "1.e-8"; "1.0e-8" is the same number and also what YAML 1.1 readers (PyYAML) accept.
const defaultFloat = DUMP_SCHEMA.tags.find((t) => t.tagName === 'tag:yaml.org,2002:float') as ScalarTagDefinition<number>;
const floatTag: ScalarTagDefinition<number> = {
  ...defaultFloat,
  represent: (x: number) => {
    const s = defaultFloat.represent(x);
    return /^[-+]?[0-9]+\.e/.test(s) ? s.replace('.e', '.0e') : s;
  },
};

function validate(raw: unknown, whereOf: (path: Path) => string): TrainConfig {
  try {
    return checkTrainConfig(raw);
  } catch (err) {
    if (!(err instanceof FieldError)) throw err;
    const key = formatPath(err.path);
    throw new ToolError(`${whereOf(err.path)}: ${key ? `${key}: ` : ''}${err.reason}`);
  }
}

interface Layer {
  name: string;
  data: Record<string, unknown>;
}

/** The file and its `extends:` ancestors, the root ancestor first. */
function readChain(file: string, stack: Array<{ abs: string; name: string }>): Layer[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw fsError(err, file);
  }
  const parsed = parseYaml(text, file);
  if (parsed === undefined || parsed === null) {
    throw new ToolError(`${file}: the config file is empty; give at least the model (see configs/gpt2/run_gpt2_tiny.yaml)`);
  }
  if (!isMapping(parsed)) throw new ToolError(`${file}: expected a mapping of config sections, got ${Array.isArray(parsed) ? 'a list' : JSON.stringify(parsed)}`);
  const { extends: parent, ...data } = parsed;
  const here = [...stack, { abs: resolve(file), name: file }];
  if (parent === undefined || parent === null) return [{ name: file, data }];
  if (typeof parent !== 'string' || parent === '') throw new ToolError(`${file}: extends: must be a path to a config file, got ${JSON.stringify(parent)}`);
  // Relative to the file that says it, so configs can move together.
  const parentFile = isAbsolute(parent) ? parent : join(dirname(file), parent);
  if (here.some((f) => f.abs === resolve(parentFile))) {
    throw new ToolError(`${file}: extends: cycle ${[...here.map((f) => f.name), parentFile].join(' → ')}`);
  }
  return [...readChain(parentFile, here), { name: file, data }];
}

function parseYaml(text: string, name: string): unknown {
  let docs: unknown[];
  try {
    docs = loadAll(text, { filename: name });
  } catch (err) {
    if (!(err instanceof YAMLException)) throw err;
    const at = err.mark ? `:${err.mark.line + 1}:${err.mark.column + 1}` : '';
    throw new ToolError(`${name}${at}: ${err.reason}`);
  }
  if (docs.length > 1) throw new ToolError(`${name}: expected one YAML document, found ${docs.length}`);
  const problem = hostile(docs[0]);
  if (problem !== undefined) throw new ToolError(`${name}: ${problem}`);
  return docs[0];
}

/** A whole config has about a hundred values; aliases may not expand it past this. */
const MAX_NODES = 10_000;
/** Keys that would reach Object.prototype when merged into a plain object. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Why parsed YAML may not be used (undefined when it may): a key that would pollute prototypes, or
 * more values than any config has once aliases are expanded. js-yaml shares aliased nodes, so an
 * "alias bomb" parses fast but explodes in whatever walks it later (merging, error messages);
 * counting each visit, with a budget, stops it at once.
 */
function hostile(doc: unknown): string | undefined {
  let nodes = 0;
  const walk = (v: unknown, path: Path): string | undefined => {
    if (++nodes > MAX_NODES) return `more than ${MAX_NODES} values once aliases are expanded (an alias bomb?); a config needs far fewer`;
    if (v === null || typeof v !== 'object') return undefined;
    const entries: Array<[string | number, unknown]> = Array.isArray(v) ? v.map((item, i) => [i, item]) : Object.entries(v);
    for (const [key, item] of entries) {
      if (typeof key === 'string' && FORBIDDEN_KEYS.has(key)) return `${formatPath([...path, key])}: not a config key`;
      const problem = walk(item, [...path, key]);
      if (problem !== undefined) return problem;
    }
    return undefined;
  };
  return walk(doc, []);
}

/** Deep merge: mappings merge key by key; lists, scalars and null replace. */
function mergeInto(target: Record<string, unknown>, src: Record<string, unknown>, path: Path, source: string, origins: Origins): void {
  for (const [key, value] of Object.entries(src)) {
    const p = [...path, key];
    const current = target[key];
    if (isMapping(current) && isMapping(value)) mergeInto(current, value, p, source, origins);
    else {
      target[key] = structuredClone(value);
      setOrigin(origins, p, source);
    }
  }
}

function setOrigin(origins: Origins, path: Path, source: string): void {
  const key = formatPath(path);
  for (const k of [...origins.keys()]) if (k.startsWith(`${key}.`) || k.startsWith(`${key}[`)) origins.delete(k);
  origins.set(key, source);
}

const SEGMENT = /^([A-Za-z_][A-Za-z0-9_-]*)((?:\[\d+\])*)$/;

function parseAssignment(assignment: string): { path: Path; value: unknown } {
  const eq = assignment.indexOf('=');
  if (eq < 0) throw new UsageError(`--set ${assignment}: expected KEY.PATH=VALUE, e.g. runner.max_steps=20`);
  const key = assignment.slice(0, eq).trim();
  const text = assignment.slice(eq + 1);
  const path: Path = [];
  for (const part of key.split('.')) {
    const m = SEGMENT.exec(part);
    if (!m) throw new UsageError(`--set ${assignment}: bad key path ${JSON.stringify(key)} (expected e.g. optimizer.betas[1])`);
    if (FORBIDDEN_KEYS.has(m[1])) throw new UsageError(`--set ${assignment}: ${m[1]} is not a config key`);
    path.push(m[1]);
    for (const [, index] of m[2].matchAll(/\[(\d+)\]/g)) {
      // setAt fills a list up to the index: bound it by what the schema allows there.
      const list = formatPath(path);
      const capacity = listCapacity(path);
      if (capacity === undefined) throw new UsageError(`--set ${assignment}: ${list} is not a list`);
      if (Number(index) >= capacity) throw new UsageError(`--set ${assignment}: index ${index} is out of range (${list} holds at most ${capacity} items)`);
      path.push(Number(index));
    }
  }
  if (text.trim() === '') throw new UsageError(`--set ${assignment}: empty value (write null to clear a key)`);
  let value: unknown;
  try {
    value = load(text);
  } catch (err) {
    if (!(err instanceof YAMLException)) throw err;
    throw new UsageError(`--set ${assignment}: bad value: ${err.reason}`);
  }
  const problem = hostile(value);
  if (problem !== undefined) throw new UsageError(`--set ${assignment}: ${problem}`);
  return { path, value };
}

function defaultAt(path: Path): unknown {
  let v: unknown = DEFAULT_SHAPE;
  for (const seg of path) v = v !== null && typeof v === 'object' ? (v as Record<string | number, unknown>)[seg] : undefined;
  return v;
}

/**
 * Sets raw[path] = value, creating what is missing on the way (a list index into an absent list
 * starts from the default list, so `optimizer.betas[1]=0.98` keeps β1). Something of the wrong kind
 * on the way is replaced, and validation then reports the key. Returns the shallowest path that
 * changed, for blaming errors on the --set.
 */
function setAt(raw: Record<string, unknown>, path: Path, value: unknown): Path {
  let cur: Record<string | number, unknown> = raw;
  let changed: Path | undefined;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    if (Array.isArray(cur) && typeof seg === 'number' && seg >= cur.length) {
      while (cur.length < seg) cur.push(null);
      changed ??= path.slice(0, i);
    }
    if (i === path.length - 1) {
      cur[seg] = value;
      break;
    }
    const wantList = typeof path[i + 1] === 'number';
    let child = cur[seg];
    if (wantList ? !Array.isArray(child) : !isMapping(child)) {
      const def = defaultAt(path.slice(0, i + 1));
      child = wantList ? (Array.isArray(def) && (child === undefined || child === null) ? structuredClone(def) : []) : {};
      cur[seg] = child;
      changed ??= path.slice(0, i + 1);
    }
    cur = child as Record<string | number, unknown>;
  }
  return changed ?? path;
}

/** The model config's keys a training config overrides over a checkpoint's: the dropout. */
export const modelOverrides = (c: TrainConfig): Partial<GPT2Config> =>
  c.model.dropout === null ? {} : { resid_pdrop: c.model.dropout, embd_pdrop: c.model.dropout, attn_pdrop: c.model.dropout };
