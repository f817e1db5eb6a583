// One reconnect policy for every live page: exponential backoff with jitter, a floor and a
// ceiling, honouring a server's Retry-After when it sent one.

export class Backoff {
  constructor(minMs = 1000, maxMs = 30000) {
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.attempt = 0;
  }

  // The wait before the next attempt (and count it).
  next(retryAfterS) {
    let base = Math.min(this.maxMs, this.minMs * 2 ** this.attempt);
    if (retryAfterS !== undefined && retryAfterS !== null && isFinite(retryAfterS)) {
      base = Math.min(this.maxMs, Math.max(this.minMs, retryAfterS * 1000));
    }
    this.attempt += 1;
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  reset() {
    this.attempt = 0;
  }
}
