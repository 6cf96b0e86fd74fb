// Public API of the compute part: what the coordinator, the site agent and the CLI import.
export * from './types.js';
export { parseResource, parseTrainingJob, ComputeValidationError } from './validate.js';
export { place, checkPlacement, freeAt, type PlacementRequest, type PlacementResult, type Rejection } from './placement.js';
export { summarize, contributionReport, renderSummary, renderContribution, renderTable, hours, type LedgerSummary,
  type ContributionReport, type PartyRow, type Totals } from './ledger.js';
export { usageRecord, runToCompletion, placeAndRun, type SiteOwner, type PlaceAndRunOptions,
  type PlaceAndRunResult } from './usage.js';
export { probeSlurmCapacity, freeCapacity, parseNodes } from './executors/slurm-capacity.js';
export * from './executors/index.js';
