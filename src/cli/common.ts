/**
 * What every tool shares: commander set-up with examples and --version, the error → exit-code
 * contract (0 ok, 1 runtime failure, 2 usage error; one line `<tool>: error: …`, a stack trace
 * only with --debug), stderr logging, and quiet exits when a downstream pipe closes.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { describeFsError, ExitCode, ToolError, UsageError } from '../util/errors.js';
import { checkStdoutWrites } from '../util/output.js';
import { VERSION } from '../version.js';

export interface ToolInfo {
  name: string;
  summary: string;
  /** Lines shown under "Examples:" in --help. */
  examples: string[];
  /** Extra paragraphs after the examples. */
  notes?: string;
}

export function createProgram(info: ToolInfo): Command {
  const program = new Command(info.name)
    .description(info.summary)
    .version(VERSION, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show this help and exit')
    .option('-q, --quiet', 'no progress bars or informational messages on stderr')
    .option('--debug', 'print stack traces for errors')
    .showSuggestionAfterError(true)
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({
      // Commander's own messages ("error: unknown option '--x'") get our one-line format.
      outputError: (message, write) => write(`${info.name}: ${message.trim().replace(/^error: /, 'error: ')}\n`),
    });
  const examples = info.examples.map((e) => `  ${e}`).join('\n');
  program.addHelpText('after', `\nExamples:\n${examples}\n${info.notes ? `\n${info.notes.trim()}\n` : ''}`);
  return program;
}

/** Parses argv and runs the program's action, mapping every failure to an exit code. */
export async function runProgram(program: Command, argv: string[] = process.argv): Promise<void> {
  const name = program.name();
  const debug = argv.includes('--debug');
  // Every byte written to stdout is written or reported. A failed write that writeStdout did not
  // report itself (a bare process.stdout.write, commander's --help): one line and exit 1 once the
  // tool is done, unless it has already failed and said why.
  checkStdoutWrites();
  let stdoutError: NodeJS.ErrnoException | undefined;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(ExitCode.Ok); // `tool | head`: the reader has gone, stop quietly
    stdoutError ??= err;
  });
  process.on('exit', () => {
    if (stdoutError === undefined || (process.exitCode ?? ExitCode.Ok) !== ExitCode.Ok) return;
    process.stderr.write(`${name}: error: ${describeFsError(stdoutError, '<stdout>')}\n`);
    process.exitCode = ExitCode.Failure;
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    process.exitCode = exitCodeFor(err, name, debug);
  }
}

function exitCodeFor(err: unknown, name: string, debug: boolean): ExitCode {
  if (err instanceof CommanderError) {
    // Help and version exit 0; commander has already printed parse errors.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return ExitCode.Ok;
    return ExitCode.Usage;
  }
  if (err instanceof ToolError) {
    process.stderr.write(`${name}: error: ${err.message}\n`);
    if (debug && err.stack) process.stderr.write(`${err.stack}\n`);
    return err.exitCode;
  }
  const e = err as Error;
  process.stderr.write(`${name}: error: ${e?.message ?? String(err)}\n`);
  if (debug && e?.stack) process.stderr.write(`${e.stack}\n`);
  else process.stderr.write(`${name}: (internal error; run with --debug for a stack trace)\n`);
  return ExitCode.Failure;
}

/** Messages on stderr: info is silenced by --quiet, warnings are not. */
export function logger(name: string, quiet: boolean) {
  return {
    info: (message: string) => {
      if (!quiet) process.stderr.write(`${name}: ${message}\n`);
    },
    warn: (message: string) => process.stderr.write(`${name}: warning: ${message}\n`),
  };
}
export type Logger = ReturnType<typeof logger>;

/** Option parsers that turn bad values into usage errors naming the flag. */
export function intArg(flag: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^[+-]?\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) {
      throw new InvalidArgumentError(`${flag} must be an integer, got ${JSON.stringify(value)}`);
    }
    if (n < min || n > max) {
      throw new InvalidArgumentError(`${flag} must be ${max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `in [${min}, ${max}]`}, got ${n}`);
    }
    return n;
  };
}

export function choiceOption(flags: string, description: string, choices: string[], defaultValue?: string): Option {
  const option = new Option(flags, description).choices(choices);
  return defaultValue === undefined ? option : option.default(defaultValue);
}

export { UsageError };
