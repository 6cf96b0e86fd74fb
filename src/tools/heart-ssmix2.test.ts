import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { heartRecords } from './heart-csv.js';
import { heartSsmix2, ssmix2PatientId } from './heart-ssmix2.js';
import { decodeText } from '../datasources/ssmix2/charset.js';

const TOOL = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'), 'dist', 'tools', 'heart-convert.js');

test('heart-convert ssmix2 --out writes each hospital\'s storage tree in ISO-2022-JP and its enrolment list', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-heart-ssmix2-'));
  try {
    execFileSync(process.execPath, [TOOL, 'ssmix2', '--out', dir], { stdio: 'pipe' });
    const want = heartSsmix2(2);
    const id = ssmix2PatientId(2, 0);
    const adt = Object.keys(want).find((p) => p.includes(`/${id}/-/ADT-00/`))!;
    assert.match(adt, /^ssmix2\/300\/000\/3000000000\/-\/ADT-00\/3000000000_-_ADT-00_-_19870101080000000_-_1$/);
    const bytes = readFileSync(join(dir, 'switzerland', adt));
    assert.deepEqual(new Uint8Array(bytes), want[adt]);
    assert.ok(bytes.includes(Buffer.from([0x1b, 0x24, 0x42])), 'JIS X 0208 text behind an ISO 2022 escape');
    assert.match(decodeText(bytes, 'iso-2022-jp'), /^MSH\|\^~\\&\|HIS\|SWITZERLAND\|GW\|RCV\|19870101080000\|\|ADT\^A08\^ADT_A01\|/);
    assert.match(decodeText(bytes, 'iso-2022-jp'), /\rPID\|0001\|\|3000000000\^\^\^\^PI\|\|患者\^0\^/);
    const enrolment = readFileSync(join(dir, 'switzerland', 'enrolment.csv'), 'utf8').trim().split('\n');
    assert.equal(enrolment.length - 1, heartRecords(2).filter((r) => r.set !== null).length);
    assert.match(execFileSync(process.execPath, [TOOL, '--help']).toString(), /ssmix2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
