/** What a round driver the engine delegates to (analytics-rounds.ts, async-rounds.ts) needs from it. */
import type { Store } from '../store/store.js';
import type { EventBus } from './events.js';
import type { AuditKey } from '../governance/audit-store.js';

export interface DriverContext {
  store: Store;
  bus: EventBus;
  now: () => number;
  log: (msg: string) => void;
  audit?: AuditKey;
  /** Default round deadline in seconds when the study sets none. */
  defaultTimeoutS: number;
}
