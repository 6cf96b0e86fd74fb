/**
 * BatchStream: an endless, seeded stream of shuffled mini-batches over one site's rows.
 *
 * It behaves like iterating a `torch.utils.data.DataLoader(shuffle=True)` again and again:
 * each pass (epoch) is a fresh permutation, the last partial batch of a pass is kept, and
 * the position carries over between federated rounds (a round of k steps may end in the
 * middle of an epoch; the next round continues there).
 *
 * Epoch e's permutation is drawn from its own derived seed (seed, 'epoch', e), so the whole
 * position is just {epoch, offset}: `state()` is small JSON and `BatchStream.restore(state)`
 * continues the identical stream after a site agent restarts.
 */
import { createRng, permutation } from './rng.js';

export interface BatchStreamState {
  n: number;
  batchSize: number;
  seed: number;
  /** Index of the current pass over the data (0-based). */
  epoch: number;
  /** Position inside the current pass: rows already handed out. */
  offset: number;
}

export class BatchStream {
  private perm: Uint32Array | null = null;
  private permEpoch = -1;

  private constructor(private st: BatchStreamState) {}

  static create(n: number, batchSize: number, seed: number): BatchStream {
    return BatchStream.restore({ n, batchSize, seed, epoch: 0, offset: 0 });
  }

  /** Rebuilds a stream at a saved position; validates the state so a corrupt file is refused. */
  static restore(state: BatchStreamState): BatchStream {
    const { n, batchSize, seed, epoch, offset } = state;
    const int = (v: unknown) => typeof v === 'number' && Number.isInteger(v);
    if (!int(n) || n < 1) throw new Error(`BatchStream: n must be a positive integer, got ${n}`);
    if (!int(batchSize) || batchSize < 1) throw new Error(`BatchStream: batchSize must be a positive integer, got ${batchSize}`);
    if (!(typeof seed === 'number' && Number.isFinite(seed))) throw new Error(`BatchStream: seed must be a finite number, got ${seed}`);
    if (!int(epoch) || epoch < 0) throw new Error(`BatchStream: epoch must be a non-negative integer, got ${epoch}`);
    if (!int(offset) || offset < 0 || offset >= n) throw new Error(`BatchStream: offset must be in [0, ${n}), got ${offset}`);
    return new BatchStream({ n, batchSize, seed, epoch, offset });
  }

  state(): BatchStreamState {
    return { ...this.st };
  }

  get n(): number {
    return this.st.n;
  }

  /** Batches per pass, counting the last partial one (ceil(n / batchSize)). */
  get batchesPerEpoch(): number {
    return Math.ceil(this.st.n / this.st.batchSize);
  }

  /** Row indices of the next mini-batch (a fresh array each call). */
  next(): Uint32Array {
    const st = this.st;
    if (this.permEpoch !== st.epoch) {
      this.perm = permutation(st.n, createRng(st.seed, 'epoch', st.epoch));
      this.permEpoch = st.epoch;
    }
    const end = Math.min(st.n, st.offset + st.batchSize);
    const batch = this.perm!.slice(st.offset, end);
    if (end === st.n) {
      st.epoch++;
      st.offset = 0;
    } else {
      st.offset = end;
    }
    return batch;
  }
}
