/**
 * Prometheus metrics (prom-client): one registry for the process and the metric objects every part
 * increments. The coordinator serves the registry at `GET /metrics`. Label values are bounded (route
 * patterns, status codes, fixed outcome names, site ids), never free text.
 *
 * Who feeds what:
 *  - HTTP requests and latencies, open event streams, failed authentications, agent last-seen and the
 *    store-readiness gauge: the coordinator's HTTP layer (src/coordinator/plugins/).
 *  - Rounds, tasks and refusals: the coordinator counts the round engine's bus events; the engine itself
 *    increments them directly once it is wired to this module (wave 2). The engine counts its retries after
 *    transient faults itself (`engineRetries`, coordinator/faults.ts says what is transient).
 *  - Store query timings: the store's `onQuery` hook observes `storeQueryDuration`.
 *  - Open long-polls, uploads in flight and refusals at a bound: coordinator/plugins/limits.ts.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
// Process and Node.js runtime metrics under their standard names (process_*, nodejs_*), as dashboards expect.
collectDefaultMetrics({ register: registry });

const registers = [registry];

export const httpRequests = new Counter({
  name: 'setu_http_requests_total',
  help: 'HTTP requests answered, by method, route pattern and status code',
  labelNames: ['method', 'route', 'status'] as const,
  registers,
});

export const httpDuration = new Histogram({
  name: 'setu_http_request_duration_seconds',
  help: 'Time from a request arriving to its answer being sent, by method and route pattern (long-polls included)',
  labelNames: ['method', 'route'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers,
});

export const storeQueryDuration = new Histogram({
  name: 'setu_store_query_duration_seconds',
  help: 'Store query time by operation (the store reports each query through its onQuery hook)',
  labelNames: ['operation'] as const,
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
  registers,
});

export const storeReady = new Gauge({
  name: 'setu_store_ready',
  help: '1 when the last readiness probe could read and write the store and the data directory had room, else 0',
  registers,
});

export const rounds = new Counter({
  name: 'setu_rounds_total',
  help: 'Rounds by event (opened, committed, failed) and kind (prepare, fit, …)',
  labelNames: ['event', 'kind'] as const,
  registers,
});

export const tasks = new Counter({
  name: 'setu_tasks_total',
  help: 'Task outcomes: issued, accepted (update stored), refused (update refused), failed (the site could not run it), expired',
  labelNames: ['outcome'] as const,
  registers,
});

export const refusals = new Counter({
  name: 'setu_refusals_total',
  help: 'Uploads the coordinator refused (bad layout, norm bound, cohort, stale task, …)',
  registers,
});

/** Time and update bytes of fit aggregations, by path (`streamed` slice by slice from the updates, or `in_memory`): bench large-model reads them. */
export const aggregationSeconds = new Counter({
  name: 'setu_aggregation_seconds_total',
  help: 'Seconds spent computing new model versions from fit updates, by path (streamed, in_memory)',
  labelNames: ['path'] as const,
  registers,
});

export const aggregationBytes = new Counter({
  name: 'setu_aggregation_update_bytes_total',
  help: 'Bytes of fit updates aggregated into new model versions, by path (streamed, in_memory)',
  labelNames: ['path'] as const,
  registers,
});

export const engineRetries = new Counter({
  name: 'setu_engine_retries_total',
  help: 'Round-engine steps retried after a transient fault (store unavailable, connection lost, lock timeout, …), by reason',
  labelNames: ['reason'] as const,
  registers,
});

export const authFailures = new Counter({
  name: 'setu_auth_failures_total',
  help: 'Requests refused for failed authentication: answered 401, or 429 once over the failure limit',
  labelNames: ['status'] as const,
  registers,
});

export const eventStreamsOpen = new Gauge({
  name: 'setu_event_streams_open',
  help: 'Live event streams (GET /v1/events) open on this coordinator',
  registers,
});

export const agentLastSeen = new Gauge({
  name: 'setu_agent_last_seen_timestamp_seconds',
  help: 'When each site agent last made an authenticated request (seconds since the epoch), read from the store at scrape time',
  labelNames: ['site'] as const,
  registers,
});

export const limitRefusals = new Counter({
  name: 'setu_limit_refusals_total',
  help: 'Requests refused at a bound (coordinator/plugins/limits.ts), by limit: longpolls_per_site, uploads, upload_bytes, uploads_per_site, streams_per_identity, round_bytes',
  labelNames: ['limit'] as const,
  registers,
});

export const openLongPolls = new Gauge({
  name: 'setu_open_longpolls',
  help: 'Site long-polls (task and SecAgg+ stage polls) open on this coordinator',
  registers,
});

export const openUploads = new Gauge({
  name: 'setu_uploads_in_flight',
  help: 'Uploads (fit results, masked SecAgg+ inputs) being received or checked on this coordinator',
  registers,
});

export const openUploadBytes = new Gauge({
  name: 'setu_upload_bytes_in_flight',
  help: 'Bytes the uploads in flight on this coordinator declared (content-length)',
  registers,
});

export const roundUpdateBytes = new Gauge({
  name: 'setu_round_update_bytes',
  help: 'Bytes of accepted updates the open rounds hold on this coordinator until they are aggregated',
  registers,
});
