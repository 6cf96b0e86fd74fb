/**
 * Waiting on what a process says: every line of a child's stdout/stderr is parsed (the coordinator's pino JSON
 * lines into objects, an agent's text lines as they are) and handed to whoever waits for a line that matches.
 * The harness orders its actions on these events, never on fixed sleeps.
 */
import type { ChildProcess } from 'node:child_process';

export interface Line {
  /** The line as written. */
  text: string;
  /** The parsed JSON object of a structured line. */
  json?: Record<string, unknown>;
  /** Its `msg` (pino) or the text itself. */
  msg: string;
  at: number;
}

type Waiter = { match: (l: Line) => boolean; resolve: (l: Line) => void };

export class LineWatcher {
  private readonly waiters = new Set<Waiter>();
  private readonly listeners = new Set<(l: Line) => void>();

  /** Follows a child's output (stdout and stderr); call again for a restarted child. */
  follow(child: ChildProcess): void {
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      let buf = '';
      stream.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          this.emit(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
    }
  }

  private emit(text: string): void {
    let json: Record<string, unknown> | undefined;
    if (text.startsWith('{')) {
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        /* a plain line that starts with a brace */
      }
    }
    const line: Line = { text, msg: typeof json?.msg === 'string' ? json.msg : text, at: Date.now(), ...(json ? { json } : {}) };
    for (const l of this.listeners) l(line);
    for (const w of [...this.waiters]) {
      if (w.match(line)) {
        this.waiters.delete(w);
        w.resolve(line);
      }
    }
  }

  on(fn: (l: Line) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** The next line that matches, or undefined when `signal` aborts first (or `timeoutMs` passes). */
  next(match: (l: Line) => boolean, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Line | undefined> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (l: Line | undefined) => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        this.waiters.delete(w);
        resolve(l);
      };
      const w: Waiter = { match, resolve: done };
      const onAbort = () => done(undefined);
      if (opts.signal?.aborted) return resolve(undefined);
      opts.signal?.addEventListener('abort', onAbort);
      if (opts.timeoutMs !== undefined) timer = setTimeout(() => done(undefined), opts.timeoutMs);
      this.waiters.add(w);
    });
  }
}

/** A coordinator request line: `route` and `status` of an answered request (observability plugin). */
export function isRequest(l: Line, route: string, status?: number, caller?: string): boolean {
  const j = l.json;
  if (!j || j.msg !== 'request' || j.route !== route) return false;
  if (status !== undefined && j.status !== status) return false;
  return caller === undefined || j.caller === caller;
}
