/**
 * The live events of every coordinator process on one PostgreSQL, on each one's bus (Store.peers): a dashboard or
 * `setu bench live` following any one process behind the balancer sees the rounds another one drives and the updates
 * another one accepted. Wake-ups of long-polls (`tasks`) and engines (`drive`) have their own messages
 * (task-wake.ts, engine.ts); an event from a peer is not relayed again and not counted in this process's metrics.
 */
import type { PeerSignals } from '../store/peer-signals.js';
import type { CoordinatorEvent, EventBus } from './events.js';

/** The bus events worth relaying: what event streams show, and identity changes (streams and caches re-check). */
const RELAYED = new Set<CoordinatorEvent['type']>(['identity.changed', 'round.opened', 'update.accepted', 'update.refused', 'round.committed', 'study.status', 'task.progress', 'task.failed']);

/** Relays this process's events to the others and theirs onto this bus; returns the stop. */
export function relayPeerEvents(bus: EventBus, peers: PeerSignals | undefined): () => void {
  if (!peers) return () => {};
  const offBus = bus.on((e) => {
    if (RELAYED.has(e.type) && !bus.fromPeer(e)) peers.publish({ kind: 'event', event: e });
  });
  const offPeers = peers.subscribe((m) => {
    const e = m['event'] as CoordinatorEvent | undefined;
    if (m.kind === 'event' && e && typeof e === 'object' && RELAYED.has(e.type)) bus.emitFromPeer(e);
  });
  return () => {
    offBus();
    offPeers();
  };
}
