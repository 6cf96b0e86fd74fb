/**
 * Message catalogues (src/web/i18n/*.json) and the current language. Every text the dashboard shows
 * comes from a catalogue; English is complete and the fallback, so a key missing from another
 * catalogue shows in English rather than as a key.
 */
import en from '../i18n/en.json';
import ja from '../i18n/ja.json';
import hi from '../i18n/hi.json';

export type Key = keyof typeof en;
export const LANGS = { en: 'English', ja: '日本語', hi: 'हिन्दी' } as const;
export type Lang = keyof typeof LANGS;
const catalogues: Record<Lang, Partial<Record<Key, string>>> = { en, ja, hi };

const stored = (() => {
  try {
    return localStorage.getItem('setu.lang');
  } catch {
    return null;
  }
})();
const initial: Lang = stored && stored in LANGS ? (stored as Lang) : navigator.language.startsWith('ja') ? 'ja' : navigator.language.startsWith('hi') ? 'hi' : 'en';
/** The current language; App keeps it in its state too, so a change re-renders every page. */
export const lang = { value: initial };
document.documentElement.lang = initial;

export function setLang(l: Lang): void {
  lang.value = l;
  document.documentElement.lang = l;
  try {
    localStorage.setItem('setu.lang', l);
  } catch {
    /* private mode: the choice lasts for this page only */
  }
}

/** `t('studies.roundOf', { n: 3, of: 15 })` fills the `{n}` and `{of}` placeholders; an unknown key comes back as itself. */
export function t(key: Key, params?: Record<string, string | number>): string {
  const s = catalogues[lang.value][key] ?? en[key] ?? key;
  return params ? s.replace(/\{(\w+)\}/g, (_, k: string) => String(params[k] ?? `{${k}}`)) : s;
}

export function fmtTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return t('common.never');
  return new Date(ms).toLocaleString(lang.value === 'ja' ? 'ja-JP' : lang.value === 'hi' ? 'hi-IN' : 'en-GB');
}

export function fmtAgo(ms: number | null | undefined, now = Date.now()): string {
  if (ms === null || ms === undefined) return t('common.never');
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return t('common.secondsAgo', { n: s });
  if (s < 3600) return t('common.minutesAgo', { n: Math.round(s / 60) });
  if (s < 86400) return t('common.hoursAgo', { n: Math.round(s / 3600) });
  return fmtTime(ms);
}

/** Seconds of compute as people read them, in the page's language: 0.4 s, 12 s, 3 min 20 s, 2 h 05 min. */
export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !(seconds >= 0)) return '–';
  if (seconds < 10) return t('unit.s', { n: seconds.toLocaleString(locale(), { minimumFractionDigits: seconds === 0 ? 0 : 1, maximumFractionDigits: 1 }) });
  if (seconds < 60) return t('unit.s', { n: Math.round(seconds) });
  if (seconds < 3600) return `${t('unit.min', { n: Math.floor(seconds / 60) })} ${t('unit.s', { n: String(Math.round(seconds % 60)).padStart(2, '0') })}`;
  const m = Math.round(seconds / 60);
  return `${t('unit.h', { n: Math.floor(m / 60) })} ${t('unit.min', { n: String(m % 60).padStart(2, '0') })}`;
}

const locale = () => (lang.value === 'ja' ? 'ja-JP' : lang.value === 'hi' ? 'hi-IN' : 'en-US');

/** A share as a percentage with one decimal (76.0%), in the page's language. */
export function fmtPct(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return `${(v * 100).toLocaleString(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 })}%`;
}

export function fmtNum(v: number | null | undefined, digits = 3): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return v.toLocaleString(locale(), { maximumFractionDigits: digits });
}
