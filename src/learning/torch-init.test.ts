import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mt19937, torchLinearInit } from './torch-init.js';

test('MT19937 reference output (seed 5489: first value 3499211612)', () => {
  assert.equal(new Mt19937(5489).nextUint32(), 3499211612);
});

// Values printed by torch 1.13 (Debian python3-torch):
//   torch.manual_seed(s); m = torch.nn.Linear(13, 1); m.weight[0, :3], m.bias
const TORCH: Array<[number, number[], number]> = [
  [0, [-0.0020764702931046486, 0.14878268539905548, -0.22827164828777313], -0.18368400633335114],
  [42, [0.2120448350906372, 0.230202779173851, -0.06497549265623093], 0.03756168484687805],
  [61, [-0.24174702167510986, 0.1566702276468277, -0.041307687759399414], 0.04283177852630615],
  [2 ** 32 + 7, [0.01937153935432434, -0.16707393527030945, 0.08831475675106049], -0.16290469467639923],
];

test('nn.Linear(13, 1) weights equal torch\'s for the same seed, bit for bit', () => {
  for (const [seed, w, b] of TORCH) {
    const got = torchLinearInit(seed, 13, 1);
    assert.deepEqual([...got['weight']!.data.subarray(0, 3)], w, `seed ${seed}`);
    assert.equal(got['bias']!.data[0], b);
    assert.deepEqual(got['weight']!.shape, [1, 13]);
  }
});

test('nn.Linear(3, 2): row-major weight, then bias', () => {
  const got = torchLinearInit(5, 3, 2);
  assert.deepEqual([...got['weight']!.data], [0.38134199380874634, -0.43172991275787354, 0.4705054759979248, 0.3694199025630951, 0.4850936532020569, -0.44265997409820557]);
  assert.deepEqual([...got['bias']!.data], [-0.3875272870063782, 0.27472564578056335]);
  assert.throws(() => torchLinearInit(-1, 3), /non-negative/);
});
