/**
 * Errors a user can act on. CLIs print them as one line `<tool>: error: <message>` and exit with
 * `exitCode`; anything else is a bug and is reported with its stack under --debug.
 */

/** Every exit status a tool can end with (the one place they are defined). */
export enum ExitCode {
  Ok = 0,
  /** A runtime failure: bad input data, a missing file, a full disk, … */
  Failure = 1,
  /** Bad flags or arguments. */
  Usage = 2,
  /** Stopped by SIGINT (128 + 2), after saving what it could. */
  Interrupted = 130,
  /** Stopped by SIGTERM (128 + 15), after saving what it could. */
  Terminated = 143,
}

export class ToolError extends Error {
  readonly exitCode: ExitCode;
  constructor(message: string, options: { exitCode?: ExitCode; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ToolError';
    this.exitCode = options.exitCode ?? ExitCode.Failure;
  }
}

/** Bad flags or arguments. */
export class UsageError extends ToolError {
  constructor(message: string) {
    super(message, { exitCode: ExitCode.Usage });
    this.name = 'UsageError';
  }
}

/** Turns a Node fs error into a one-line message naming the path. */
export function describeFsError(err: unknown, path: string): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return `${path}: no such file or directory`;
    case 'EISDIR':
      return `${path}: is a directory, expected a file`;
    case 'ENOTDIR':
      return `${path}: not a directory`;
    case 'EACCES':
    case 'EPERM':
      return `${path}: permission denied`;
    case 'ENOSPC':
      return `${path}: no space left on device`;
    case 'EDQUOT':
      return `${path}: disk quota exceeded`;
    default:
      return `${path}: ${(err as Error | undefined)?.message ?? String(err)}`;
  }
}

/** Wraps a failing fs call into a ToolError naming the path. */
export function fsError(err: unknown, path: string): ToolError {
  if (err instanceof ToolError) return err;
  return new ToolError(describeFsError(err, path), { cause: err });
}

/** The Node error code ("ENOSPC", …) behind err, looking through the causes ToolErrors wrap. */
function errorCode(err: unknown): string | undefined {
  for (let e = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** A full disk or quota while writing anywhere under `output`, reported against `output`. */
export function outOfSpace(err: unknown, output: string): ToolError | undefined {
  const code = errorCode(err);
  return code === 'ENOSPC' || code === 'EDQUOT' ? new ToolError(describeFsError({ code }, output), { cause: err }) : undefined;
}
