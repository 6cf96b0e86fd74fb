import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ACTIONS, ROLES, can, scopeOf, rolesFor, isAction, isRole, type Action } from './roles.js';

test('deny by default: unknown roles and actions are refused', () => {
  assert.equal(can('root', 'study.start'), false);
  assert.equal(can('consortium_admin', 'study.delete'), false);
  assert.equal(can('consortium_admin', 'toString'), false);
  assert.equal(can('__proto__', 'study.view'), false);
  assert.equal(scopeOf('site', 'constructor'), null);
});

test('site agents can only poll their tasks, submit updates and read their own things', () => {
  const siteActions = (Object.keys(ACTIONS) as Action[]).filter((a) => can('site', a)).sort();
  assert.deepEqual(siteActions, ['key.rotate', 'model.download', 'privacy.view', 'study.view', 'task.poll', 'update.submit']);
  for (const a of siteActions) assert.equal(scopeOf('site', a), 'own-site');
  for (const r of ROLES.filter((r) => r !== 'site')) {
    assert.equal(can(r, 'task.poll'), false, `${r} must not poll tasks`);
    assert.equal(can(r, 'update.submit'), false, `${r} must not submit updates`);
  }
});

test('the auditor reads everything auditable and changes nothing', () => {
  const writes = (Object.keys(ACTIONS) as Action[]).filter((a) => can('auditor', a) && !/\.(view|export)$/.test(a) && a !== 'key.rotate');
  assert.deepEqual(writes, []);
  assert.ok(can('auditor', 'audit.export'));
  assert.ok(can('auditor', 'privacy.view'));
});

test('approvals belong to site admins of their own institution; studies to their leads', () => {
  for (const a of ['study.approve', 'study.decline', 'study.withdraw'] as const) {
    assert.deepEqual(rolesFor(a), ['site_admin']);
    assert.equal(scopeOf('site_admin', a), 'own-institution');
  }
  assert.equal(scopeOf('study_lead', 'study.start'), 'own-study');
  assert.equal(can('site_admin', 'study.start'), false);
  assert.deepEqual(rolesFor('audit.view'), ['consortium_admin', 'auditor']);
});

test('every action is documented and granted to at least one known role', () => {
  for (const [name, spec] of Object.entries(ACTIONS)) {
    assert.ok(isAction(name));
    assert.ok(spec.doc.length > 10, `${name} needs a doc line`);
    const roles = Object.keys(spec.grants);
    assert.ok(roles.length > 0, `${name} is granted to nobody`);
    for (const r of roles) assert.ok(isRole(r), `${name} grants unknown role ${r}`);
  }
});
