/**
 * The site as a witness of the coordinator's audit log. Every task carries the coordinator's signed checkpoint of
 * its audit head (protocol/audit-checkpoint.ts); the agent keeps the newest in <stateDir>/audit-witness.json, on
 * its own disk where whoever can write the coordinator's database cannot reach. The count never goes down and one
 * count has one head: a checkpoint that contradicts the kept one is logged as an error and kept in the file as
 * evidence (both are signed by the coordinator). An auditor later runs `setu audit verify --witness <that file>`,
 * which checks the log still extends the kept checkpoint (a deleted tail, a deleted log or a rewound head fail).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseWitness, witnessSee, type WitnessFile } from '../protocol/audit-checkpoint.js';
import { writeAtomic } from './state.js';

export const WITNESS_FILE = 'audit-witness.json';

export class AuditWitness {
  readonly file: string;
  private kept: WitnessFile | undefined;

  constructor(stateDir: string, private readonly holder: string, private readonly log: (m: string) => void = () => {}) {
    this.file = join(stateDir, WITNESS_FILE);
    if (existsSync(this.file)) {
      try {
        this.kept = parseWitness(readFileSync(this.file, 'utf8'), holder);
      } catch (e) {
        // Never overwrite what might be evidence: keep it aside and start again.
        this.log(`error: audit witness ${this.file} is unreadable (${(e as Error).message}); starting a new one beside it`);
        this.file = join(stateDir, `audit-witness.${Date.now()}.json`);
      }
    }
  }

  /** The checkpoint handed with a task (absent from an older coordinator: nothing to witness). */
  see(checkpoint: unknown, now = Date.now()): void {
    if (checkpoint === undefined) return;
    // Witnessing must never stop the site from working: a failure here (a full disk) is logged, not thrown.
    try {
      this.keep(checkpoint, now);
    } catch (e) {
      this.log(`error: could not keep the coordinator's audit checkpoint in ${this.file}: ${(e as Error).message}`);
    }
  }

  private keep(checkpoint: unknown, now: number): void {
    const r = witnessSee(this.kept, checkpoint, this.holder, now);
    if (r.outcome === 'invalid') return this.log(`error: the coordinator's audit checkpoint is not valid (${r.reason}); not kept`);
    if (r.outcome === 'conflict') this.log(`error: the coordinator's audit log contradicts what this site witnessed: ${r.reason}; both signed checkpoints are kept in ${this.file}`);
    if (r.file && r.file !== this.kept) {
      writeAtomic(this.file, JSON.stringify(r.file, null, 2) + '\n');
      this.kept = r.file;
    }
  }

  current(): WitnessFile | undefined {
    return this.kept;
  }
}
