/**
 * `setu bench large-model` kept from rotting: a small round (3 sites × 300,000 parameters) through a real coordinator
 * process over HTTP. The committed version must equal the in-memory aggregate byte for byte and come from the
 * streamed path; the figures are printed, not judged (a loaded 2-core machine would make a threshold flaky).
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { main, runLargeModelBench, table } from './large-model.js';

it('a small large-model round: streamed, bit-identical to the in-memory aggregate, every figure measured', { timeout: 5 * 60_000 }, async (t) => {
  const r = await runLargeModelBench({ params: 300_000, sites: 3, tensors: 3, store: 'sqlite', log: (s) => t.diagnostic(s) });
  t.diagnostic(table(r));
  assert.equal(r.verified, true, 'the committed version differs from the in-memory aggregate');
  assert.equal(r.aggregatePath, 'streamed');
  assert.equal(r.modelBytes, 1_200_000);
  for (const k of ['roundMs', 'aggregateMs', 'peakRssBytes', 'memcpyBytesPerS', 'aggregateBytesPerS', 'plainPutBytesPerS', 'uploadBytesPerS'] as const) {
    assert.ok(Number.isFinite(r[k]) && r[k] > 0, `${k} = ${r[k]}`);
  }
  assert.match(table(r), /aggregation \(streamed\).*memcpy/);
});

it('a server optimiser and Krum through the same harness: streamed, bit-identical to the in-memory strategy', { timeout: 5 * 60_000 }, async (t) => {
  for (const strategy of ['fedadam', 'krum']) {
    const r = await runLargeModelBench({ params: 100_000, sites: 3, tensors: 3, strategy, store: 'sqlite', log: (s) => t.diagnostic(s) });
    t.diagnostic(table(r));
    assert.equal(r.strategy, strategy === 'krum' ? 'Krum' : 'FedAdam');
    assert.equal(r.verified, true, `${strategy}: the committed version differs from the in-memory aggregate`);
    assert.equal(r.aggregatePath, 'streamed', strategy);
    assert.match(table(r), new RegExp(`^large-model: ${r.strategy}, 3 sites`));
  }
});

it('client-level DP and an asynchronous study through the same harness: the streamed paths, every figure measured', { timeout: 5 * 60_000 }, async (t) => {
  for (const o of [{ dp: true }, { async: true }, { dp: true, async: true }]) {
    const r = await runLargeModelBench({ params: 100_000, sites: 3, tensors: 3, store: 'sqlite', ...o, log: (s) => t.diagnostic(s) });
    t.diagnostic(table(r));
    assert.equal(r.aggregatePath, 'streamed', JSON.stringify(o));
    assert.equal(r.verified, 'skipped');
    assert.ok(r.aggregateMs > 0 && r.peakRssBytes > 0);
    assert.match(table(r), new RegExp(`^large-model: FedAvg${o.dp ? ' under client-level DP' : ''}${o.async ? '.* \\(asynchronous' : ''}`));
  }
});

it('bad options are a usage error (exit 2)', async () => {
  const err = process.stderr.write.bind(process.stderr);
  let said = '';
  process.stderr.write = ((c: string) => ((said += c), true)) as typeof process.stderr.write;
  try {
    assert.equal(await main(['--params', 'lots']), 2);
    assert.equal(await main(['--store', 'mysql']), 2);
    assert.equal(await main(['--strategy', 'cyclic']), 2);
    assert.equal(await main(['--dp', '--strategy', 'krum']), 2);
  } finally {
    process.stderr.write = err;
  }
  assert.match(said, /--params must be an integer from 1 to 500000000, got "lots"/);
  assert.match(said, /--store must be sqlite or postgres, got "mysql"/);
  assert.match(said, /--strategy must be one of FedAvg, .*FedAdam.*Krum.*, got "cyclic"/);
  assert.match(said, /--dp runs FedAvg .*got --strategy krum/);
});
