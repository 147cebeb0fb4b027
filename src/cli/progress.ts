/**
 * Progress bars on stderr, only when it is a terminal and --quiet was not given; otherwise every
 * call is a no-op, so pipelines and logs stay clean. A bar shows how far, the rate (MB/s, or
 * `rateUnit` per second for counted items), any fields the tool adds (loss, tokens/s, …) and the
 * ETA when the total is known.
 */
import type { SingleBar } from 'cli-progress';

export interface Progress {
  update(value: number, payload?: Record<string, unknown>): void;
  setTotal(total: number): void;
  stop(): void;
}

export interface ProgressOptions {
  quiet?: boolean;
  total?: number;
  label: string;
  unit?: 'bytes' | 'items';
  /** What an item is, for the rate: "records" gives "12.3 records/s" (items only). */
  rateUnit?: string;
  /** Fields shown after the rate, with `{key}` for a payload value: ['loss {loss}', '{tps} tokens/s']. */
  fields?: readonly string[];
}

const NONE: Progress = { update() {}, setTotal() {}, stop() {} };

/** "12.3 MB/s", "4.56 records/s": three significant digits are enough on a bar. */
export function formatRate(perSecond: number, unit: string): string {
  if (!Number.isFinite(perSecond) || perSecond <= 0) return `– ${unit}/s`;
  return `${perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toPrecision(3)} ${unit}/s`;
}

export async function createProgress(options: ProgressOptions): Promise<Progress> {
  if (options.quiet || !process.stderr.isTTY) return NONE;
  const { default: cliProgress } = await import('cli-progress');
  const bytes = options.unit === 'bytes';
  const fields = (options.fields ?? []).map((f) => ` | ${f}`).join('');
  const bar: SingleBar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${options.label} [{bar}] {percentage}% | {done} | {rate}${fields} | ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
      formatValue: (v, _o, type) => (type === 'value' || type === 'total') && bytes ? `${(v / 1e6).toFixed(1)}` : String(v),
    },
    cliProgress.Presets.shades_classic,
  );
  let total = options.total ?? 0;
  // The rate counts from the first update, so a resumed run (starting at step N) is not inflated.
  let base: { value: number; at: number } | undefined;
  const describe = (v: number) => (bytes ? `${(v / 1e6).toFixed(1)}${total ? `/${(total / 1e6).toFixed(1)}` : ''} MB` : `${v}${total ? `/${total}` : ''}`);
  const rate = (v: number) => {
    const now = performance.now();
    base ??= { value: v, at: now };
    const perSecond = (v - base.value) / ((now - base.at) / 1000);
    return bytes ? formatRate(perSecond / 1e6, 'MB') : formatRate(perSecond, options.rateUnit ?? 'items');
  };
  const blank = Object.fromEntries((options.fields ?? []).flatMap((f) => [...f.matchAll(/\{(\w+)\}/g)].map((m) => [m[1], '–'])));
  bar.start(total || 1, 0, { done: describe(0), rate: formatRate(0, bytes ? 'MB' : options.rateUnit ?? 'items'), ...blank });
  return {
    update: (value, payload) => bar.update(value, { done: describe(value), rate: rate(value), ...payload }),
    setTotal: (t) => {
      total = t;
      bar.setTotal(t);
    },
    stop: () => bar.stop(),
  };
}
