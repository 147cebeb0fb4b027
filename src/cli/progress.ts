/**
 * Progress bars on stderr, only when it is a terminal and --quiet was not given; otherwise every
 * call is a no-op, so pipelines and logs stay clean.
 */
import type { SingleBar } from 'cli-progress';

export interface Progress {
  update(value: number, payload?: Record<string, unknown>): void;
  setTotal(total: number): void;
  stop(): void;
}

const NONE: Progress = { update() {}, setTotal() {}, stop() {} };

export async function createProgress(options: { quiet?: boolean; total?: number; label: string; unit?: 'bytes' | 'items' }): Promise<Progress> {
  if (options.quiet || !process.stderr.isTTY) return NONE;
  const { default: cliProgress } = await import('cli-progress');
  const bytes = options.unit === 'bytes';
  const bar: SingleBar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${options.label} [{bar}] {percentage}% | {done} | ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
      formatValue: (v, _o, type) => (type === 'value' || type === 'total') && bytes ? `${(v / 1e6).toFixed(1)}` : String(v),
    },
    cliProgress.Presets.shades_classic,
  );
  const total = options.total ?? 0;
  const describe = (v: number) => (bytes ? `${(v / 1e6).toFixed(1)}${total ? `/${(total / 1e6).toFixed(1)}` : ''} MB` : `${v}${total ? `/${total}` : ''}`);
  bar.start(total || 1, 0, { done: describe(0) });
  return {
    update: (value, payload) => bar.update(value, { done: describe(value), ...payload }),
    setTotal: (t) => bar.setTotal(t),
    stop: () => bar.stop(),
  };
}
