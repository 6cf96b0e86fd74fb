/** Public surface of federated analytics. */
export * from './spec.js';
export * from './answers.js';
export { SiteTable, QueryRefused, declaredColumns, type ColumnType } from './columns.js';
export { suppressTable, releaseCount, releaseRiskSet, checkReleased, type ReleasedCount } from './release.js';
export { DpRelease, type DpContext, type NoiseInfo, type NoiseSource } from './dp.js';
export * from './statistics.js';
export { answerQuery, answerProblems, answerKindOf, combineAnswers, runQuery, QueryFailed, type QueryTask, type SiteAnswer, type QueryResult, type QueryRun, type KmResult, type LogRankQueryResult } from './query.js';
export { kaplanMeier, survMedian, type KmCurve } from './survival/km.js';
export { logRank, type LogRankResult } from './survival/logrank.js';
export { guardedRiskTable, poolTables, siteRiskTables, RiskTablesAnswerSchema, type RiskTable, type RiskTablesAnswer, type PooledTable } from './survival/risk-table.js';
export { CoxNewton, type CoxNewtonState, combineCox, coxDesign, coxTerms, siteCox, timeSums, CoxStratumAnswerSchema, CoxRiskSetsAnswerSchema, type CoxAnswer, type CoxResult, type CoxSums, type Ties } from './survival/cox.js';
export { normalQuantile, normalSf, twoSidedP, chiSquareSf } from './distributions.js';
