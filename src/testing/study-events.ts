/**
 * A study's commits as they happen, from coordinators' live event streams (GET /v1/events, what the dashboard
 * follows): the load harness samples a round's figures when its commit is announced, not at its next look, so two
 * rounds that commit within one polling interval of each other keep figures of their own. With several coordinators
 * on one PostgreSQL each stream carries the others' events too (coordinator/peer-events.ts), so a commit may come
 * once per stream followed: a reader takes each round once.
 */

export type StudyMoment =
  | { type: 'round.committed'; round: number; kind: string }
  | { type: 'study.status'; status: string; error: string | null };

export interface CommitStream {
  /** The next commit or status change, in the order the streams delivered them; undefined after `timeoutMs`. */
  next(timeoutMs: number): Promise<StudyMoment | undefined>;
  close(): void;
}

/** Opens one stream per coordinator URL (each with the same stream token) and waits until every one is ready. */
export async function followStudy(urls: readonly string[], token: string, study: string): Promise<CommitStream> {
  const queue: StudyMoment[] = [];
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  const ac = new AbortController();
  const push = (m: StudyMoment) => {
    queue.push(m);
    wake?.();
  };
  const ready = urls.map(async (base) => {
    const res = await fetch(`${base}/v1/events?token=${encodeURIComponent(token)}&study=${encodeURIComponent(study)}`, { signal: ac.signal });
    if (res.status !== 200 || !res.body) throw new Error(`the event stream of ${base} answered ${res.status}: ${await res.text()}`);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    let opened: () => void = () => {};
    let refused: (e: Error) => void = () => {};
    const isOpen = new Promise<void>((resolve, reject) => ((opened = resolve), (refused = reject)));
    void (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`the event stream of ${base} ended`);
          buffered += decoder.decode(value, { stream: true });
          // An SSE message ends at a blank line; its `event:` and `data:` lines are all this needs.
          for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
            const message = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            const event = /^event: (.*)$/m.exec(message)?.[1];
            const data = /^data: (.*)$/m.exec(message)?.[1];
            if (event === 'ready') opened();
            else if (event === 'round.committed' && data) {
              const e = JSON.parse(data) as { round: number; kind: string };
              push({ type: 'round.committed', round: e.round, kind: e.kind });
            } else if (event === 'study.status' && data) {
              const e = JSON.parse(data) as { status: string; error?: string | null };
              push({ type: 'study.status', status: e.status, error: e.error ?? null });
            }
          }
        }
      } catch (e) {
        if (ac.signal.aborted) return;
        failure = e instanceof Error ? e : new Error(String(e));
        refused(failure);
        wake?.();
      }
    })();
    await isOpen;
  });
  try {
    await Promise.all(ready);
  } catch (e) {
    ac.abort();
    throw e;
  }
  return {
    async next(timeoutMs) {
      const until = Date.now() + timeoutMs;
      while (queue.length === 0) {
        if (failure) throw failure;
        const left = until - Date.now();
        if (left <= 0) return undefined;
        await new Promise<void>((r) => {
          const timer = setTimeout(r, left);
          wake = () => {
            clearTimeout(timer);
            r();
          };
        });
        wake = undefined;
      }
      return queue.shift();
    },
    close: () => ac.abort(),
  };
}
