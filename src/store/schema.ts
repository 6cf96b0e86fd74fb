/**
 * Row types of the coordinator's SQL store. Times are milliseconds since the epoch (integers);
 * ids are text (random, dialect-neutral); binary payloads (safetensors) are blobs/bytea.
 */
import type { Generated } from 'kysely';

export interface SitesTable {
  id: string;
  name: string;
  institution: string | null;
  jurisdiction: string | null;
  credential_hash: string;
  public_key: string | null;
  status: string; // 'active' | 'revoked'
  created_at: number;
  last_seen_at: number | null;
}

export interface InvitesTable {
  token_hash: string;
  site_name: string;
  institution: string | null;
  jurisdiction: string | null;
  created_by: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
  site_id: string | null;
}

export interface StudiesTable {
  id: string;
  name: string;
  spec: string; // JSON StudySpec
  status: string; // 'created' | 'running' | 'completed' | 'stopped' | 'failed'
  current_round: number; // last committed round (0 = initial model only)
  participants: string | null; // JSON array of site ids, fixed when the study starts
  created_by: string;
  created_at: number;
  updated_at: number;
  claimed_by: string | null; // coordinator instance driving the study
  claimed_until: number | null;
  error: string | null;
}

export interface RoundsTable {
  study_id: string;
  round: number;
  status: string; // 'open' | 'committed' | 'failed'
  kind: string; // 'fit' | 'evaluate'
  opened_at: number;
  deadline_at: number;
  committed_at: number | null;
  model_version_id: string | null; // the version this round produced (fit) or evaluated (evaluate)
}

export interface TasksTable {
  id: string;
  study_id: string;
  round: number;
  site_id: string;
  kind: string; // 'fit' | 'evaluate'
  model_version_id: string;
  config: string; // JSON
  status: string; // 'issued' | 'delivered' | 'done' | 'expired'
  created_at: number;
  deadline_at: number;
  delivered_at: number | null;
  done_at: number | null;
}

export interface ModelVersionsTable {
  id: string;
  study_id: string;
  round: number;
  digest: string; // sha256 hex of the safetensors bytes, kept in store.blobs (migration 0009_blobs)
  size: number; // bytes
  created_at: number;
}

export interface UpdatesTable {
  task_id: string;
  study_id: string;
  round: number;
  site_id: string;
  digest: string | null; // sha256 hex of the update's safetensors bytes (a SecAgg+ row: of the masked input, kept by the session)
  size: number | null; // bytes in store.blobs under digest; null: none stored (evaluate results, SecAgg+ masked inputs)
  num_examples: number;
  metrics: string; // JSON
  received_at: number;
}

export interface MetricsTable {
  id: Generated<number>;
  study_id: string;
  round: number;
  site_id: string | null; // null = the global/aggregate value
  phase: string; // 'fit' | 'evaluate'
  name: string;
  value: number;
}

export interface RefusalsTable {
  id: Generated<number>;
  study_id: string | null;
  round: number | null;
  site_id: string | null;
  task_id: string | null;
  reason: string;
  at: number;
  code: string | null; // why, as a code (0006_audit_bounds); one row per (task, code), counted
  count: number;
  last_at: number | null;
}

export interface StrategyStateTable {
  study_id: string;
  round: number;
  json: string;
  tensors: Uint8Array | null; // safetensors
}

export interface KvTable {
  key: string;
  value: string;
}

export interface UsersTable {
  id: string;
  name: string;
  role: string; // consortium_admin | study_lead | site_admin | auditor
  institution: string | null;
  public_key: string | null; // raw Ed25519 (base64url); null until the user enrols
  status: string; // 'invited' | 'active' | 'revoked'
  created_by: string;
  created_at: number;
}

export interface UserInvitesTable {
  token_hash: string;
  user_id: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

export interface RequestNoncesTable {
  key_id: string;
  nonce: string;
  ts: number;
}

export interface SiteCohortsTable {
  site_id: string;
  dataset: string;
  size: number;
  declared_at: number;
}

export interface AuditLogTable {
  seq: number;
  ts: number;
  actor: string;
  kind: string;
  subject: string;
  data: string; // canonical JSON
  prev_hash: string;
  hash: string;
  sig: string;
}

export interface AuditHeadTable {
  id: number;
  seq: number;
  hash: string;
}

export interface Database {
  sites: SitesTable;
  invites: InvitesTable;
  studies: StudiesTable;
  rounds: RoundsTable;
  tasks: TasksTable;
  model_versions: ModelVersionsTable;
  updates: UpdatesTable;
  metrics: MetricsTable;
  refusals: RefusalsTable;
  strategy_state: StrategyStateTable;
  kv: KvTable;
  users: UsersTable;
  user_invites: UserInvitesTable;
  request_nonces: RequestNoncesTable;
  site_cohorts: SiteCohortsTable;
  audit_log: AuditLogTable;
  audit_head: AuditHeadTable;
}
