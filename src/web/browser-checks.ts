/**
 * What the browser tests share (dashboard, analytics and async browser tests): Debian's Chromium launched the same
 * way, the CSP-violation and page-error watch, and checks that run in the page.
 */
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = process.env['SETU_CHROMIUM'] ?? '/usr/bin/chromium';

/** Debian's Chromium (never a downloaded browser), headless, in the profile directory `profile`. */
export function launchChromium(profile: string, o: { width?: number; acceptDownloads?: boolean } = {}): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ...(o.acceptDownloads ? { acceptDownloads: true } : {}),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: o.width ?? 1280, height: 1000 },
  });
}

/** Collects every CSP violation the browser reports, in any document of any tab of `ctx` (the test fails on any). */
export async function watchCspViolations(ctx: BrowserContext, errors: string[]): Promise<void> {
  await ctx.exposeFunction('__cspViolation', (v: string) => errors.push(`CSP violation: ${v}`));
  await ctx.addInitScript(() => {
    const report = (window as unknown as { __cspViolation: (v: string) => void }).__cspViolation;
    document.addEventListener('securitypolicyviolation', (e) => report(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`));
  });
}

/**
 * Characters of the page's text that the browser draws as a missing glyph: each distinct letter of a script outside
 * Latin (Devanagari, CJK, kana) is drawn on a canvas in its element's own font and compared with the drawing of a
 * code point no font has (U+10FFFD); a letter drawn the same way, or not at all, has no font here. `probe` adds
 * characters to test (the self-check below gives it that code point, which must be reported).
 */
export function missingGlyphs(page: Page, probe = ''): Promise<string[]> {
  return page.evaluate((extra) => {
    const canvas = document.createElement('canvas');
    canvas.width = 48;
    canvas.height = 48;
    const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
    const draw = (ch: string, font: string) => {
      ctx.clearRect(0, 0, 48, 48);
      ctx.font = font;
      ctx.fillStyle = '#000';
      ctx.textBaseline = 'middle';
      ctx.fillText(ch, 4, 24);
      return Array.from(ctx.getImageData(0, 0, 48, 48).data.filter((_, i) => i % 4 === 3)).join(',');
    };
    const wanted = /[\u0900-\u097F\u3040-\u30FF\u4E00-\u9FFF\uFF00-\uFFEF]|[\u{10FFFD}]/u;
    const byFont = new Map<string, Set<string>>();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || !el.offsetParent) continue;
      const s = getComputedStyle(el);
      const font = `${s.fontStyle} ${s.fontWeight} 24px ${s.fontFamily}`;
      for (const ch of n.textContent ?? '') if (wanted.test(ch)) (byFont.get(font) ?? byFont.set(font, new Set()).get(font)!).add(ch);
    }
    const body = getComputedStyle(document.body);
    for (const ch of extra) (byFont.get(`normal 400 24px ${body.fontFamily}`) ?? byFont.set(`normal 400 24px ${body.fontFamily}`, new Set()).get(`normal 400 24px ${body.fontFamily}`)!).add(ch);
    const missing: string[] = [];
    for (const [font, chars] of byFont) {
      const tofu = draw('\u{10FFFD}', font);
      const blank = draw(' ', font);
      for (const ch of chars) {
        const d = draw(ch, font);
        if (d === tofu || d === blank) missing.push(ch);
      }
    }
    return missing;
  }, probe);
}
