/** The dashboard shell: login, navigation (hash routes), language switcher. */
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { Api, ApiError, importCredential, saveCredential, savedCredential, type Credential } from './api.js';
import { LANGS, lang, setLang, t, type Key, type Lang } from './i18n.js';
import { Audit, Compute, ModelCards, Overview, Privacy, StudyPage, Studies } from './pages.js';
import './style.css';

/** Each page and the action (governance/roles.ts) a role needs to open it: a role without it sees no tab. */
const PAGES: { path: string; key: Key; action: string }[] = [
  { path: 'overview', key: 'nav.overview', action: 'consortium.view' },
  { path: 'studies', key: 'nav.studies', action: 'study.view' },
  { path: 'privacy', key: 'nav.privacy', action: 'privacy.view' },
  { path: 'compute', key: 'nav.compute', action: 'compute.view' },
  { path: 'audit', key: 'nav.audit', action: 'audit.view' },
  { path: 'models', key: 'nav.models', action: 'model.card.view' },
];

function useHash(): string {
  const [h, setH] = useState(location.hash);
  useEffect(() => {
    const on = () => setH(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return h;
}

function LangSwitch({ value, onChange }: { value: Lang; onChange: (l: Lang) => void }) {
  return (
    <label class="lang">
      <span class="sr">{t('common.language')}</span>
      <select data-testid="lang" value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value as Lang)} aria-label={t('common.language')}>
        {(Object.keys(LANGS) as Lang[]).map((l) => (
          <option value={l}>{LANGS[l]}</option>
        ))}
      </select>
    </label>
  );
}

/** Who the credential is and what its role may do (GET /v1/whoami); the call fails for a bad credential. */
async function identify(c: Credential): Promise<Session> {
  const me = await new Api(c).get<{ role: string; actions?: string[] }>('/v1/whoami');
  return { credential: c, role: me.role, actions: me.actions ?? PAGES.map((p) => p.action) };
}

interface Session {
  credential: Credential;
  role: string;
  actions: string[];
}

function Login({ onLogin }: { onLogin: (s: Session) => Promise<void> }) {
  const [text, setText] = useState('');
  const [keyId, setKeyId] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    let c: Credential;
    try {
      c = await importCredential(text, keyId.trim() || undefined);
    } catch (err) {
      setError((err as Error).message);
      return;
    }
    setBusy(true);
    try {
      await onLogin(await identify(c));
    } catch (err) {
      setError(err instanceof ApiError ? `${t('login.refused')}: ${err.message}` : (err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const onFile = async (e: Event) => {
    const f = (e.target as HTMLInputElement).files?.[0];
    if (f) setText(await f.text());
  };
  return (
    <form class="login card" onSubmit={submit}>
      <h1>{t('login.title')}</h1>
      <p class="muted">{t('login.help')}</p>
      <label>
        {t('login.file')}
        <input type="file" accept=".json,.key,.pem,application/json" onChange={onFile} data-testid="key-file" />
      </label>
      <label>
        {t('login.credential')}
        <textarea rows={5} value={text} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} data-testid="credential" spellcheck={false} />
      </label>
      <label>
        {t('login.keyId')}
        <input value={keyId} onInput={(e) => setKeyId((e.target as HTMLInputElement).value)} />
      </label>
      {error && (
        <p class="notice error" data-testid="login-error">
          {error}
        </p>
      )}
      <button type="submit" disabled={busy} data-testid="login">
        {t('login.submit')}
      </button>
    </form>
  );
}

function App() {
  const [language, setLanguage] = useState<Lang>(lang.value);
  const [session, setSession] = useState<Session | null>(null);
  const [checking, setChecking] = useState(true);
  const hash = useHash();
  const api = useMemo(() => (session ? new Api(session.credential) : null), [session]);

  useEffect(() => {
    // A reload keeps the tab's key (a non-extractable CryptoKey in IndexedDB); it is checked again before anything is shown.
    void (async () => {
      const c = await savedCredential();
      if (c) {
        try {
          setSession(await identify(c));
        } catch {
          await saveCredential(undefined);
        }
      }
      setChecking(false);
    })();
  }, []);

  const changeLang = (l: Lang) => {
    setLang(l);
    setLanguage(l);
  };
  const login = async (s: Session) => {
    await saveCredential(s.credential);
    setSession(s);
  };
  const logout = () => {
    setSession(null);
    void saveCredential(undefined);
  };

  const route = hash.replace(/^#\/?/, '').split('/');
  const page = route[0] || 'overview';
  const allowed = PAGES.filter((p) => session?.actions.includes(p.action));
  const denied = session && PAGES.find((p) => p.path === page && !session.actions.includes(p.action));
  let body;
  if (!api) body = checking ? <p class="muted">{t('common.loading')}</p> : <Login onLogin={login} />;
  else if (denied)
    body = (
      <div class="notice forbidden" data-testid="forbidden" data-reason="role">
        <strong>{t('error.forbidden', { what: t(denied.key) })}</strong>
        <p class="muted">{t('error.roleCannot', { role: t(`role.${session.role}` as Key), action: denied.action })}</p>
      </div>
    );
  else if (page === 'studies' && route[1]) body = <StudyPage api={api} id={decodeURIComponent(route[1])} key={route[1]} actions={session!.actions} />;
  else if (page === 'studies') body = <Studies api={api} />;
  else if (page === 'privacy') body = <Privacy api={api} />;
  else if (page === 'compute') body = <Compute api={api} />;
  else if (page === 'models') body = <ModelCards api={api} />;
  else if (page === 'audit') body = <Audit api={api} />;
  else body = <Overview api={api} />;

  return (
    <div class="shell" lang={language}>
      <header>
        <a class="brand" href="#/overview">
          <svg class="logo" viewBox="0 0 32 20" width="32" height="20" aria-hidden="true">
            <path d="M1 16 Q16 -4 31 16" fill="none" stroke="#f4a261" stroke-width="3" />
            <path d="M1 17 H31 M8 17 V9 M16 17 V5 M24 17 V9" stroke="#f4a261" stroke-width="2" />
          </svg>{' '}
          Setu
        </a>
        {api && (
          <nav>
            {allowed.map((p) => (
              <a href={`#/${p.path}`} class={page === p.path ? 'active' : ''} data-nav={p.path}>
                {t(p.key)}
              </a>
            ))}
          </nav>
        )}
        <div class="right">
          {session && (
            <span class="who" data-testid="role">
              {t('login.as', { role: t(`role.${session.role}` as Key) })}
            </span>
          )}
          <LangSwitch value={language} onChange={changeLang} />
          {session && (
            <button class="link" onClick={logout} data-testid="logout">
              {t('login.logout')}
            </button>
          )}
        </div>
      </header>
      <main>{body}</main>
      <footer class="muted small">{t('footer.tagline')}</footer>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
