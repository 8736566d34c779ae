/**
 * Attributes the process's CPU time to the requests running at the time, in equal shares. The
 * engine runs requests together (batched sequences on shared threads), so no per-request CPU
 * counter exists; a fair share of what the process really burnt is the measurable truth. Each
 * start/stop reads `process.cpuUsage()` (~1 µs) and spreads the time since the last event over
 * the requests that were running through it.
 */
export class CpuClock {
  private active = 0;
  /** Cumulative CPU µs that one request running since start-up would have been given. */
  private perActive = 0;
  private last = process.cpuUsage();

  private advance(): void {
    const now = process.cpuUsage();
    const used = now.user - this.last.user + (now.system - this.last.system);
    this.last = now;
    if (this.active > 0) this.perActive += used / this.active;
  }

  /** Starts timing one request; the returned function stops it and gives its share in ms. */
  start(): () => number {
    this.advance();
    this.active++;
    const from = this.perActive;
    let stopped = false;
    let ms = 0;
    return () => {
      if (!stopped) {
        stopped = true;
        this.advance();
        this.active--;
        ms = (this.perActive - from) / 1000;
      }
      return ms;
    };
  }
}
