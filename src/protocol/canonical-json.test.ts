import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { canonicalJson, parseJsonStrict, CanonicalJsonError } from './canonical-json.js';

test('keys are sorted at every depth, no whitespace', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: 'x' } }), '{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}');
  assert.equal(canonicalJson({ b: 1, a: 2 }), canonicalJson({ a: 2, b: 1 }));
  assert.equal(canonicalJson('é"\n'), '"é\\"\\n"');
  assert.equal(canonicalJson(-0), '0');
  assert.equal(canonicalJson([]), '[]');
  assert.equal(canonicalJson(null), 'null');
});

test('refuses values that have no exact JSON form, naming the path', () => {
  assert.throws(() => canonicalJson({ a: [1, NaN] }), /\$\.a\[1\]: non-finite number NaN/);
  assert.throws(() => canonicalJson({ a: Infinity }), CanonicalJsonError);
  assert.throws(() => canonicalJson({ a: undefined }), /\$\.a: a undefined/);
  assert.throws(() => canonicalJson({ a: 1n }), /bigint/);
  assert.throws(() => canonicalJson({ d: new Date(0) }), /plain objects.*Date/);
  assert.throws(() => canonicalJson(new Float32Array(1)), /plain objects/);
  const cyc: Record<string, unknown> = {};
  cyc.self = cyc;
  assert.throws(() => canonicalJson(cyc), /cyclic/);
  // eslint-disable-next-line no-sparse-arrays
  assert.throws(() => canonicalJson([1, , 3]), /sparse/);
});

test('a shared (non-cyclic) subobject is fine', () => {
  const s = { x: 1 };
  assert.equal(canonicalJson({ a: s, b: s }), '{"a":{"x":1},"b":{"x":1}}');
});

test('strict parser rejects duplicates, depth, trailing garbage and infinities', () => {
  assert.throws(() => parseJsonStrict('{"a":1,"a":2}'), /duplicate key "a"/);
  assert.throws(() => parseJsonStrict('{"x":{"a":1,"a":2}}'), /duplicate key/);
  assert.throws(() => parseJsonStrict('[[[1]]]', { maxDepth: 2 }), /nesting deeper than 2/);
  assert.throws(() => parseJsonStrict('{} {}'), /trailing/);
  assert.throws(() => parseJsonStrict('1e400'), /out of range/);
  assert.throws(() => parseJsonStrict("{'a':1}"), /expected a string key/);
  assert.throws(() => parseJsonStrict('"\\x"'), /bad escape/);
  assert.throws(() => parseJsonStrict('01'), /trailing/);
  assert.throws(() => parseJsonStrict(''), /end of input/);
  assert.deepEqual(parseJsonStrict(' {"a":[1,-2.5e3,true,false,null,"\\u00e9\\ud83d\\ude00"]} '), { a: [1, -2500, true, false, null, 'é😀'] });
});

test('strict parser keeps "__proto__" as data', () => {
  const v = parseJsonStrict('{"__proto__":{"polluted":true}}') as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.deepEqual(Object.keys(v), ['__proto__']);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(canonicalJson(v), '{"__proto__":{"polluted":true}}');
});

test('property: strict parser agrees with JSON.parse on valid JSON, and canonical form is a fixed point', () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      const text = JSON.stringify(v);
      const parsed = parseJsonStrict(text);
      assert.equal(canonicalJson(parsed), canonicalJson(JSON.parse(text)));
      const c = canonicalJson(parsed);
      assert.equal(canonicalJson(parseJsonStrict(c)), c);
    }),
    { numRuns: 500 },
  );
});

test('property: the strict parser only ever throws CanonicalJsonError', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 64 }), (s) => {
      try {
        parseJsonStrict(s);
      } catch (e) {
        if (!(e instanceof CanonicalJsonError)) throw e;
      }
    }),
    { numRuns: 2000 },
  );
});
