/**
 * The worked example examples/pytorch-digits-cnn, end to end with real processes: a convolutional network with
 * BatchNorm trained on images across three site agents through the Python SDK, its BatchNorm layers (F32 statistics
 * and I64 counters) kept at each site by the study's tensor rules. Checks that the network learns, that no upload
 * and no global model carries the local layers' trained values, and that each site kept its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore } from '../store/store.js';
import { decodeSafetensors, readSafetensorsHeader } from '../protocol/safetensors.js';
import { skipWithoutTorch } from '../testing/python.js';
import { runExample, walkthroughIsScript } from '../testing/examples.js';
import { LOCAL_TENSORS_FILE } from './tensor-rules.js';

const EXAMPLE = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'), 'examples', 'pytorch-digits-cnn');

test('digits CNN: images across three site agents, BatchNorm kept at each site', { skip: skipWithoutTorch(), timeout: 900_000 }, async () => {
  walkthroughIsScript(readFileSync(join(EXAMPLE, 'README.md'), 'utf8'), readFileSync(join(EXAMPLE, 'run.sh'), 'utf8') + readFileSync(join(EXAMPLE, '..', 'lib', 'local-federation.sh'), 'utf8'));
  const work = mkdtempSync(join(tmpdir(), 'setu-digits-'));
  try {
    const r = await runExample(join(EXAMPLE, 'run.sh'), work);
    assert.equal(r.code, 0, r.out);
    const study = JSON.parse(readFileSync(join(work, 'study.json'), 'utf8'));
    const acc = study.metrics.find((m: any) => m.round === study.spec.rounds && m.site === null && m.phase === 'evaluate' && m.name === 'accuracy').value;
    assert.ok(acc > 0.9, `the federated CNN learns the digits (pooled test accuracy ${acc})`);
    const store = await openStore(join(work, 'coordinator', 'setu.db'));
    try {
      const init = decodeSafetensors(await store.blobs.readAll((await store.getModelVersion(`${study.id}.v0`))!.digest)).weights;
      const final = decodeSafetensors(await store.blobs.readAll((await store.latestModelVersion(study.id))!.digest)).weights;
      const bn = Object.keys(init).filter((k) => k.startsWith('bn'));
      assert.deepEqual(bn.sort(), ['bn1.bias', 'bn1.num_batches_tracked', 'bn1.running_mean', 'bn1.running_var', 'bn1.weight', 'bn2.bias', 'bn2.num_batches_tracked', 'bn2.running_mean', 'bn2.running_var', 'bn2.weight']);
      assert.equal(init['bn1.num_batches_tracked']!.dtype, 'I64');
      for (const k of bn) assert.deepEqual([...final[k]!.data], [...init[k]!.data], `${k}: the global model holds its initial value`);
      assert.notDeepEqual([...final['conv1.weight']!.data], [...init['conv1.weight']!.data], 'the shared layers were trained');
      // No site's update carried a BatchNorm tensor.
      for (const u of await store.listUpdates(study.id, 1)) {
        assert.deepEqual(readSafetensorsHeader(await store.blobs.readAll(u.digest!)).tensors.map((t) => t.name).filter((n) => n.startsWith('bn')), []);
      }
      const card = (await store.getModelCard(study.id))!.json as { tensors: { tensors: { name: string; dtype: string; rule: string }[] } };
      assert.deepEqual(card.tensors.tensors.find((t) => t.name === 'bn2.num_batches_tracked'), { name: 'bn2.num_batches_tracked', dtype: 'I64', shape: [], rule: 'local' });
    } finally {
      await store.close();
    }
    // Each site kept its own BatchNorm layers, trained on its own images: they differ from site to site.
    const local = [1, 2, 3].map((k) => decodeSafetensors(new Uint8Array(readFileSync(join(work, `site-${k}`, 'state', 'studies', study.id, LOCAL_TENSORS_FILE)))).weights);
    assert.equal(local[0]!['bn1.num_batches_tracked']!.dtype, 'I64');
    assert.ok(local[0]!['bn1.num_batches_tracked']!.data[0]! > 0);
    assert.notDeepEqual([...local[0]!['bn1.running_mean']!.data], [...local[1]!['bn1.running_mean']!.data]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
