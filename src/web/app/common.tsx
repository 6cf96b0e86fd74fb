/** What every dashboard page shares: loading a route, saying why it failed, status badges, saving a file. */
import { useEffect, useState } from 'preact/hooks';
import type { ComponentChildren } from 'preact';
import { Api, ApiError } from './api.js';
import { t, type Key } from './i18n.js';

export type Load<T> = { state: 'loading' } | { state: 'ok'; data: T } | { state: 'error'; error: ApiError | Error };

/** Fetches `path` now, again whenever `version` changes, and every `everyMs` if given. */
export function useApi<T>(api: Api, path: string | null, version = 0, everyMs?: number): Load<T> {
  const [v, setV] = useState<Load<T>>({ state: 'loading' });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!everyMs) return;
    const h = setInterval(() => setTick((n) => n + 1), everyMs);
    return () => clearInterval(h);
  }, [everyMs]);
  useEffect(() => {
    if (path === null) return;
    let live = true;
    api.get<T>(path).then(
      (data) => live && setV({ state: 'ok', data }),
      (error: Error) => live && setV({ state: 'error', error }),
    );
    return () => {
      live = false;
    };
  }, [api, path, version, tick]);
  return v;
}

/**
 * What a failed load says. A 403 for the role ("role study_lead may not audit.view …") says the role does not cover
 * the page; any other 403 is about ownership (a study someone else leads, a site of another institution) and says
 * the coordinator's own reason. A 404 says the coordinator does not offer that API yet.
 */
export function Failure({ error, what }: { error: Error; what: Key }) {
  if (error instanceof ApiError && error.status === 403) {
    const byRole = /^role \S+ may not /.test(error.message);
    return (
      <div class="notice forbidden" data-testid="forbidden" data-reason={byRole ? 'role' : 'ownership'}>
        <strong>{byRole ? t('error.forbidden', { what: t(what) }) : t('error.notYours')}</strong>
        <p class="muted">{error.message}</p>
      </div>
    );
  }
  if (error instanceof ApiError && error.status === 404)
    return (
      <div class="notice empty" data-testid="not-available">
        {t('error.notAvailable', { what: t(what) })}
      </div>
    );
  return (
    <div class="notice error">
      {t('error.failed')}: {error.message}
    </div>
  );
}

export function Loaded<T>({ load, what, children }: { load: Load<T>; what: Key; children: (data: T) => ComponentChildren }) {
  if (load.state === 'loading') return <p class="muted">{t('common.loading')}</p>;
  if (load.state === 'error') return <Failure error={load.error} what={what} />;
  return <>{children(load.data)}</>;
}

export function Dot({ on }: { on: boolean }) {
  return <span class={`dot ${on ? 'on' : 'off'}`} aria-hidden="true" />;
}

export function Status({ status }: { status: string }) {
  const key = `status.${status}` as Key;
  const text = t(key);
  return <span class={`status status-${status}`}>{text === key ? status : text}</span>;
}

export function Progress({ value, max }: { value: number; max: number }) {
  return (
    <span class="progress">
      <progress value={value} max={max} /> {t('studies.roundOf', { n: value, of: max })}
    </span>
  );
}


/** Saves what a signed GET returns (a model, an export) as a file, under the name the coordinator suggests. */
export async function saveFile(api: Api, path: string, fallbackName: string): Promise<void> {
  const f = await api.fetchFile(path);
  saveBlob(f.blob, f.filename ?? fallbackName);
}

/** Saves a blob made in the page (an analytics result as CSV or JSON) as a file. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A button that runs `action`, shows that it is busy, and says why it failed (in the coordinator's words). */
export function ActionButton({ label, action, testId }: { label: string; action: () => Promise<void>; testId: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <span class="action">
      <button
        disabled={busy}
        data-testid={testId}
        onClick={() => {
          setBusy(true);
          setError(null);
          action().then(
            () => setBusy(false),
            (e: Error) => {
              setBusy(false);
              setError(e instanceof ApiError ? e.message : String(e));
            },
          );
        }}
      >
        {label}
      </button>
      {error && <span class="small error-text"> {error}</span>}
    </span>
  );
}

