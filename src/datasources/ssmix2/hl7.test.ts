/**
 * The strict HL7 v2 parser: what it refuses (with line and field), what it decodes, and a cross-check
 * against an independent parser, Debian's python3-hl7 (with Python's own ISO-2022-JP codec), on
 * generated messages full of escapes, repetitions, subcomponents and Japanese text, and on the heart
 * converter's real files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { decodeText, encodeIso2022jp } from './charset.js';
import { escapeHl7, parseHl7, parseHl7Path, valueAt } from './hl7.js';
import { heartSsmix2 } from '../../tools/heart-ssmix2.js';

const MSH = 'MSH|^~\\&|HIS|SEND|GW|RCV|20240101120000||OUL^R22^OUL_R22|1|P|2.5';

test('escape sequences are decoded after splitting; components, repetitions and subcomponents come apart', () => {
  const { message, problems } = parseHl7(`${MSH}\rOBX|1|ST|X^Y^JC10||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X4142\\~r2^c2&s2|\\H\\bold\\N\\ line\\.br\\two\r`);
  assert.deepEqual(problems, []);
  const obx = message!.segments[1]!;
  assert.equal(obx.line, 2);
  assert.deepEqual(obx.fields[5], [[['a|b^c&d~e\\fAB']], [['r2'], ['c2', 's2']]]);
  assert.equal(valueAt(obx, { field: 6, component: 1, subcomponent: 1 }), 'bold line\rtwo');
  assert.equal(valueAt(obx, { field: 3, component: 3, subcomponent: 1 }), 'JC10');
  assert.equal(valueAt(obx, { field: 40, component: 1, subcomponent: 1 }), '', 'beyond the segment: nothing');
  assert.deepEqual(message!.segments[0]!.fields[2], [[['^~\\&']]], 'MSH-2 as written');
  assert.equal(escapeHl7('a|b^c~d&e\\f'), 'a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f');
});

test('a broken segment is reported with its line and field and left out; the rest of the message stays', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['obx|1|NM|x', 'segment id', /segment id/],
    ['12X|1', 'segment id', /segment id/],
    ['OB|1', 'segment id', /segment id/],
    ['OBXX|1', 'segment id', /segment id/],
    ['OBX|1|ST|c||a\\Q\\b', 'OBX-5', /\\Q\\ is not an HL7 escape sequence/],
    ['OBX|1|ST|c||a\\Fb', 'OBX-5', /never ends/],
    ['OBX|1|ST|c||\\X4\\', 'OBX-5', /pairs of hex digits/],
    ['OBX|1|ST|c||\\C2842\\', 'OBX-5', /character-set escapes/],
    ['OBX|1|ST|c||a\tb', 'OBX-5', /control character U\+0009/],
    ['MSH|^~\\&|again', 'segment id', /second MSH/],
  ];
  for (const [seg, field, why] of cases) {
    const { message, problems } = parseHl7(`${MSH}\rPID|0001||123^^^^PI\r${seg}\rOBX|2|NM|c||5`);
    assert.equal(problems.length, 1, seg);
    assert.equal(problems[0]!.line, 3, seg);
    assert.equal(problems[0]!.field, field, seg);
    assert.match(problems[0]!.message, why, seg);
    assert.deepEqual(message!.segments.map((s) => s.id), ['MSH', 'PID', 'OBX'], `${seg}: only the broken segment is left out`);
  }
});

test('a broken MSH gives no message: the delimiters cannot be trusted', () => {
  for (const [text, field] of [
    ['PID|1\rOBX|1', 'segment id'],
    ['MSH|^~\\|A', 'MSH-2'],
    ['MSH|^~^&|A', 'MSH-2'],
    ['MSHa^~\\&|A', 'MSH-2'],
    ['', 'MSH'],
  ] as const) {
    const r = parseHl7(text);
    assert.equal(r.message, null, text);
    assert.equal(r.problems[0]!.field, field, text);
  }
  // Any delimiters the MSH declares are honoured.
  const alt = parseHl7('MSH#*@!%#HIS\rOBX#1#ST#a*b@c%d!F!\r\n\nPV1#1');
  assert.deepEqual(alt.problems, []);
  assert.deepEqual(alt.message!.segments[1]!.fields[3], [[['a'], ['b']], [['c', 'd#']]]);
  assert.deepEqual(alt.message!.segments.map((s) => s.line), [1, 2, 4], 'CR, CRLF and LF end segments; blank lines are skipped');
});

test('HL7 paths name a field, component and subcomponent, and nothing else', () => {
  assert.deepEqual(parseHl7Path('OBX-5'), { segment: 'OBX', field: 5, component: 1, subcomponent: 1 });
  assert.deepEqual(parseHl7Path('RXE-2.1.3'), { segment: 'RXE', field: 2, component: 1, subcomponent: 3 });
  for (const bad of ['OBX5', 'obx-5', 'OBX-0', 'OBX-5.0', 'OBX-5.1.1.1', 'OBX-x']) assert.equal(parseHl7Path(bad), null, bad);
});

function pythonHl7Skip(): string | false {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import hl7'], { encoding: 'utf8' });
  if (r.status === 0) return false;
  const why = `/usr/bin/python3 cannot import hl7 (apt-get install python3-hl7): ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`;
  // Whether we run in CI: process.env.CI, as src/testing/pg.ts decides it. CI installs python3-hl7.
  if (process.env.CI) throw new Error(`required in CI: ${why}`);
  return why;
}

// Each file: decoded with Python's codec, parsed by python3-hl7, every leaf unescaped by it (MSH-1/2 as written).
const PYTHON = `
import hl7, json, sys
from hl7.containers import Repetition, Component
out = []
for path in sys.argv[1:]:
    text = open(path, 'rb').read().decode('iso2022_jp')
    m = hl7.parse(text)
    u = lambda s: m.unescape(s)
    def rep(r):
        if isinstance(r, str): return [[u(r)]]
        return [[u(s) for s in c] if isinstance(c, Component) else [u(c)] for c in r]
    def field(f):
        if all(isinstance(x, str) for x in f): return [[[u(''.join(f))]]]
        return [rep(r) for r in f]
    segs = []
    for s in m:
        fs = [[[[str(s[0])]]]]
        for n in range(1, len(s)):
            fs.append([[[str(s[n])]]] if str(s[0]) == 'MSH' and n <= 2 else field(s[n]))
        segs.append([str(s[0]), fs])
    out.append(segs)
print(json.dumps(out, ensure_ascii=False))
`;

const JAPANESE = [...'患者太郎花子総コレステロール収縮期血圧検査結果カナひらがな血清内科１２３ＡＢＣ'];
const PLAIN = [...'ABCxyz0189 .,-+/:()<>=#%_'];
const token = fc.oneof(
  fc.constantFrom(...PLAIN),
  fc.constantFrom(...JAPANESE),
  fc.constantFrom('|', '^', '~', '&', '\\').map(escapeHl7),
  fc.constantFrom('\\X41\\', '\\X7E7C\\', '\\X3042\\'),
);
const sub = fc.array(token, { maxLength: 6 }).map((t) => t.join(''));
const comp = fc.array(sub, { minLength: 1, maxLength: 2 }).map((s) => s.join('&'));
const rep = fc.array(comp, { minLength: 1, maxLength: 3 }).map((c) => c.join('^'));
const field = fc.array(rep, { minLength: 1, maxLength: 2 }).map((r) => r.join('~'));
// python3-hl7 trims spaces at the end of a segment (ours keeps them: they are data), so none are generated there.
const segment = fc.tuple(fc.constantFrom('PID', 'PV1', 'OBX', 'OBR', 'ORC', 'SPM', 'NTE', 'ZPI'), fc.array(field, { maxLength: 8 })).map(([id, fs]) => [id, ...fs].join('|').replace(/ +$/, ''));
const messageText = fc.array(segment, { minLength: 1, maxLength: 6 }).map((s) => [MSH + '||||||~ISO IR87||ISO 2022-1994', ...s].join('\r') + '\r');

test('the parser agrees with python3-hl7 on generated messages and on the heart converter\'s files', { skip: pythonHl7Skip() }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-hl7-'));
  try {
    const texts = fc.sample(messageText, { numRuns: 300, seed: 14 });
    const heart = Object.entries(heartSsmix2(2)).filter(([p]) => p.startsWith('ssmix2/')).slice(0, 60).map(([, b]) => decodeText(b as Uint8Array, 'iso-2022-jp'));
    const all = [...texts, ...heart];
    const files = all.map((t, i) => {
      const f = join(dir, `${i}.hl7`);
      writeFileSync(f, encodeIso2022jp(t));
      return f;
    });
    writeFileSync(join(dir, 'parse.py'), PYTHON);
    const r = spawnSync('/usr/bin/python3', [join(dir, 'parse.py'), ...files], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    assert.equal(r.status, 0, r.stderr);
    const theirs = JSON.parse(r.stdout) as unknown[];
    all.forEach((t, i) => {
      const { message, problems } = parseHl7(t);
      assert.deepEqual(problems, [], t);
      assert.deepEqual(message!.segments.map((s) => [s.id, s.fields]), theirs[i], `message ${i}:\n${t.replace(/\r/g, '\n')}`);
    });
    assert.ok(all.some((t) => /[患血]/.test(t) && /\\F\\/.test(t)), 'the sample holds Japanese text and escapes');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
