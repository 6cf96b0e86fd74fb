/**
 * The Markdown of documents the coordinator writes (model cards: headings, paragraphs, lists, pipe tables, `code`
 * and **bold**) rendered as Preact elements, so the dashboard shows the very document `setu model card` prints.
 * Written here rather than taken from a Markdown library because the text carries names and purposes that users
 * typed: building elements (never innerHTML) means nothing in it can become markup or script.
 */
import type { ComponentChildren } from 'preact';

/** `code` and **bold**; everything else is text. */
export function inline(text: string): ComponentChildren[] {
  const out: ComponentChildren[] = [];
  const re = /`([^`]+)`|\*\*([^*]+)\*\*/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(m[1] !== undefined ? <code>{m[1]}</code> : <strong>{m[2]}</strong>);
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** Cells of a pipe-table row; `\|` is a literal bar inside a cell. */
function cells(line: string): string[] {
  const body = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return body.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

export function Markdown({ text, testId }: { text: string; testId?: string }) {
  const lines = text.split('\n');
  const blocks: ComponentChildren[] = [];
  for (let i = 0; i < lines.length; ) {
    const line = lines[i]!;
    const h = /^(#{1,4}) (.*)$/.exec(line);
    if (h) {
      const level = h[1]!.length;
      const content = inline(h[2]!);
      blocks.push(level === 1 ? <h2 class="doc-title">{content}</h2> : level === 2 ? <h3>{content}</h3> : <h4>{content}</h4>);
      i++;
    } else if (line.startsWith('|')) {
      const rows: string[] = [];
      while (i < lines.length && lines[i]!.startsWith('|')) rows.push(lines[i++]!);
      const head = cells(rows[0]!);
      const sep = rows[1] && /^\|[\s:|-]+\|$/.test(rows[1]) ? cells(rows[1]) : null;
      const align = head.map((_, k) => (sep?.[k]?.endsWith(':') ? 'right' : 'left'));
      const body = rows.slice(sep ? 2 : 1).map(cells);
      blocks.push(
        <table class="wide doc-table">
          <thead>
            <tr>{head.map((c, k) => <th style={{ textAlign: align[k] }}>{inline(c)}</th>)}</tr>
          </thead>
          <tbody>
            {body.map((r) => (
              <tr>{r.map((c, k) => <td style={{ textAlign: align[k] }}>{inline(c)}</td>)}</tr>
            ))}
          </tbody>
        </table>,
      );
    } else if (/^\s*- /.test(line)) {
      const items: { depth: number; text: string }[] = [];
      while (i < lines.length && /^\s*- /.test(lines[i]!)) {
        const m = /^(\s*)- (.*)$/.exec(lines[i++]!)!;
        items.push({ depth: m[1]!.length >= 2 ? 1 : 0, text: m[2]! });
      }
      blocks.push(
        <ul>
          {items.map((it) => (
            <li class={it.depth ? 'nested' : ''}>{inline(it.text)}</li>
          ))}
        </ul>,
      );
    } else if (line.trim() === '') i++;
    else {
      const para: string[] = [];
      while (i < lines.length && lines[i]!.trim() !== '' && !/^(#{1,4} |\||\s*- )/.test(lines[i]!)) para.push(lines[i++]!);
      blocks.push(<p>{inline(para.join(' '))}</p>);
    }
  }
  return (
    <div class="markdown" data-testid={testId}>
      {blocks}
    </div>
  );
}
