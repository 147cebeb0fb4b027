/**
 * Streaming text with stop strings: text is released as it arrives except for a tail that could
 * still be the start of a stop string; when the text ends with a stop string, generation stops and
 * the stop string is never released.
 */
export class StopStringFilter {
  private pending = '';
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Adds text; returns what can be released and whether a stop string was hit. */
  push(text: string): { release: string; stopped: boolean } {
    this.pending += text;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (stop.length > 0 && at >= 0) {
        const release = this.pending.slice(0, at);
        this.pending = '';
        return { release, stopped: true };
      }
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let hold = 0;
    for (let n = Math.min(this.longest - 1, this.pending.length); n > 0 && hold === 0; n--) {
      const tail = this.pending.slice(this.pending.length - n);
      if (this.stops.some((s) => s.startsWith(tail))) hold = n;
    }
    const release = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { release, stopped: false };
  }

  /** Whatever is held back, at the end of generation. */
  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return rest;
  }
}
