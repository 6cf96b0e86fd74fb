/**
 * Model cards: the transparency report of a completed study, in JSON (for machines) and Markdown (for people).
 * `modelCard` is pure; `gatherModelCard` reads what it needs from the store. The card states only what the
 * store recorded: privacy is "none" unless the study recorded SecAgg+ or a DP guarantee, performance is what the
 * sites measured on their own test splits in the final evaluation round, compute is the usage ledger, and the
 * audit-chain head it names is the head at the moment the card was written, which includes the study's
 * completion entry: an auditor holding the card can prove the chain they are shown has not been cut short.
 */
import type { StudySpec } from '../protocol/api.js';
import { headerLayout } from '../protocol/safetensors.js';
import { blobHeader } from '../store/blobs/model-blobs.js';
import { describeTensors, resolveTensorRules } from '../protocol/tensors.js';
import type { Store } from '../store/store.js';
import type { ModelCardRow } from '../store/governance.js';
import { summarize } from '../compute/ledger.js';
import type { UsageRecord } from '../compute/types.js';
import type { DataUseTerms, LifecycleStudy } from './lifecycle.js';
import { loadLifecycle, privacyOf } from './study-governance.js';

export interface CardSite {
  name: string;
  institution: string | null;
  institutionKind: string | null;
  jurisdiction: string | null;
  /** approved | withdrawn (from round n) | … as the lifecycle recorded it. */
  participation: string;
  terms: DataUseTerms | null;
  trainExamples: number | null;
  testExamples: number | null;
  metrics: Record<string, number>;
}

export interface ModelCard {
  format: 'setu-model-card-v1';
  study: { id: string; name: string; purpose: string; completedAt: number; finalModelVersion: string | null; finalModelDigest: string | null };
  institutions: { id: string | null; name: string; kind: string | null; jurisdiction: string | null }[];
  jurisdictions: string[];
  sites: CardSite[];
  training: { strategy: string; strategyParams: Record<string, unknown>; rounds: number; model: StudySpec['model']; fit: StudySpec['fit']; seed: number | null };
  /** The final model's tensors (name, dtype, shape, and the study's rule for each) and its parameter count. */
  tensors: ReturnType<typeof describeTensors> | null;
  privacy: {
    secagg: boolean;
    /** The study's (ε, δ) target, as its spec records it. */
    dp: { epsilon: number; delta: number } | null;
    /** What each site's privacy ledger recorded as spent (ε at δ), when the study used DP. */
    spent: { site: string; epsilon: number; delta: number; mechanism: string }[];
    summary: string;
  };
  performance: {
    metric: string | null;
    /**
     * Every site together: the mean of the sites' own test metrics weighted by their test examples (what the
     * federation measured; not a pooled test set, which would need the rows in one place).
     */
    acrossSites: Record<string, number>;
    perSite: { site: string; value: number | null }[];
    best: { site: string; value: number } | null;
    worst: { site: string; value: number } | null;
    gap: number | null;
  };
  compute: {
    total: { cpuSeconds: number; gpuSeconds: number; wallSeconds: number; tasks: number };
    byCountry: { country: string; contributedCpuSeconds: number; contributedGpuSeconds: number; consumedCpuSeconds: number; consumedGpuSeconds: number }[];
  };
  audit: { seq: number; head: string } | null;
}

export interface CardInput {
  studyId: string;
  name: string;
  spec: StudySpec;
  completedAt: number;
  finalModel: { id: string; digest: string } | null;
  /** The final model's tensors, from its header. */
  tensors?: ReturnType<typeof describeTensors> | null;
  lifecycle: LifecycleStudy | undefined;
  sites: { id: string; name: string; institutionId: string | null; institution: string | null; jurisdiction: string | null; trainExamples: number | null; testExamples: number | null; metrics: Record<string, number> }[];
  institutions: { id: string; name: string; kind: string; jurisdiction: string }[];
  /** The example-weighted metrics over every site (the round's metrics without a site). */
  acrossSites: Record<string, number>;
  usage: UsageRecord[];
  /** The privacy ledger's latest total per site (site ids), if any. */
  spent?: { siteId: string; epsilon: number; delta: number; mechanism: string }[];
  audit: { seq: number; head: string } | null;
}

/** The metric the gap is reported on: accuracy for classifiers, the C-index for survival models, else the loss. */
function primaryMetric(names: Set<string>): string | null {
  for (const m of ['accuracy', 'cIndex', 'auc', 'loss']) if (names.has(m)) return m;
  return null;
}

export function modelCard(i: CardInput): ModelCard {
  const instById = new Map(i.institutions.map((x) => [x.id, x]));
  const sites: CardSite[] = i.sites.map((s) => {
    const a = i.lifecycle?.approvals[s.id];
    const participation = !a ? 'participant (no lifecycle record)' : a.status === 'withdrawn' ? `withdrawn${a.fromRound !== undefined ? ` from round ${a.fromRound}` : ''}: ${a.reason ?? ''}` : a.status;
    const inst = s.institutionId ? instById.get(s.institutionId) : undefined;
    return { name: s.name, institution: inst?.name ?? s.institution, institutionKind: inst?.kind ?? null, jurisdiction: inst?.jurisdiction ?? s.jurisdiction,
      participation, terms: a?.terms ?? null, trainExamples: s.trainExamples, testExamples: s.testExamples, metrics: s.metrics };
  });
  const institutions = [...new Map(sites.map((s) => {
    const inst = i.institutions.find((x) => x.name === s.institution);
    return [s.institution ?? s.name, { id: inst?.id ?? null, name: s.institution ?? `(site ${s.name})`, kind: s.institutionKind, jurisdiction: s.jurisdiction }];
  })).values()];
  const jurisdictions = [...new Set(sites.map((s) => s.jurisdiction).filter((j): j is string => !!j))].sort();
  const metric = primaryMetric(new Set(sites.flatMap((s) => Object.keys(s.metrics))));
  const perSite = sites.map((s) => ({ site: s.name, value: metric && Number.isFinite(s.metrics[metric]) ? s.metrics[metric]! : null }));
  const valued = perSite.filter((p): p is { site: string; value: number } => p.value !== null);
  const lowerIsBetter = metric === 'loss';
  const sorted = [...valued].sort((a, b) => (lowerIsBetter ? a.value - b.value : b.value - a.value));
  const best = sorted[0] ?? null;
  const worst = sorted[sorted.length - 1] ?? null;
  const { secagg, dp } = privacyOf(i.spec);
  const privacySummary = secagg || dp
    ? [secagg ? 'SecAgg+ (no single site update readable by the coordinator)' : null, dp ? `differential privacy with ε = ${dp.epsilon}, δ = ${dp.delta}` : null].filter(Boolean).join('; ')
    : 'none: neither SecAgg+ nor differential privacy was used';
  const summary = summarize(i.usage);
  return {
    format: 'setu-model-card-v1',
    study: { id: i.studyId, name: i.name, purpose: i.spec.description?.trim() || i.name, completedAt: i.completedAt, finalModelVersion: i.finalModel?.id ?? null, finalModelDigest: i.finalModel?.digest ?? null },
    institutions,
    jurisdictions,
    sites,
    training: { strategy: i.spec.strategy.name, strategyParams: i.spec.strategy.params ?? {}, rounds: i.spec.rounds, model: i.spec.model, fit: i.spec.fit, seed: i.spec.seed ?? null },
    tensors: i.tensors ?? null,
    privacy: { secagg, dp, spent: (i.spent ?? []).map((x) => ({ site: i.sites.find((s) => s.id === x.siteId)?.name ?? x.siteId, epsilon: x.epsilon, delta: x.delta, mechanism: x.mechanism })), summary: privacySummary },
    performance: { metric, acrossSites: i.acrossSites, perSite, best, worst, gap: best && worst ? Math.abs(best.value - worst.value) : null },
    compute: {
      total: summary.total,
      byCountry: summary.byCountry.map((c) => ({ country: c.key, contributedCpuSeconds: c.contributed.cpuSeconds, contributedGpuSeconds: c.contributed.gpuSeconds,
        consumedCpuSeconds: c.consumed.cpuSeconds, consumedGpuSeconds: c.consumed.gpuSeconds })),
    },
    audit: i.audit,
  };
}

const f4 = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(4));
/** Seconds as people read them: 0.4 s, 12 s, 3 min 20 s, 2 h 05 min. */
export function duration(seconds: number): string {
  if (!(seconds >= 0)) return '–';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.round(seconds / 60);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(Math.round(seconds % 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}
const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** The model in words: "a logistic regression on 13 inputs". */
function describeModel(m: ModelCard['training']['model']): string {
  const x = m as { kind: string; inputDim?: number; hidden?: number[]; activation?: string; name?: string; description?: string };
  if (x.kind === 'custom') return `the site-trained model "${x.name}"${x.description ? ` (${x.description})` : ''}, defined by its initial weights`;
  if (x.kind === 'logistic') return `a logistic regression on ${x.inputDim} inputs`;
  if (x.kind === 'mlp') return `a multilayer perceptron ${[x.inputDim, ...(x.hidden ?? []), 1].join(' → ')} (${x.activation})`;
  if (x.kind === 'cox') return `a Cox proportional-hazards model on ${x.inputDim} inputs${x.hidden?.length ? ` with hidden layers ${x.hidden.join(', ')}` : ''}`;
  return `model ${JSON.stringify(m)}`;
}

/** Local training in words: "100 local steps of batch 4, SGD at learning rate 0.001". */
function describeFit(f: ModelCard['training']['fit']): string {
  const o = f.optimizer;
  const steps = f.localSteps !== undefined ? `${f.localSteps} local steps` : f.epochs !== undefined ? `${f.epochs} local epoch${f.epochs === 1 ? '' : 's'}` : '100 local steps';
  const opt = `${o.kind === 'sgd' ? 'SGD' : 'Adam'} at learning rate ${o.lr}${o.momentum ? `, momentum ${o.momentum}` : ''}`;
  return `${steps} of batch ${f.batchSize}, ${opt}${f.proximalMu ? `, proximal term μ = ${f.proximalMu}` : ''}`;
}

export function modelCardMarkdown(c: ModelCard): string {
  const L: string[] = [];
  L.push(`# Model card: ${c.study.name}`, '');
  L.push(`Study \`${c.study.id}\`, completed ${new Date(c.study.completedAt).toISOString()}. Final model \`${c.study.finalModelVersion ?? '–'}\` (sha256 \`${c.study.finalModelDigest ?? '–'}\`).`, '');
  L.push('## Purpose', '', c.study.purpose, '');
  L.push('## Institutions and jurisdictions', '');
  L.push('| site | institution | kind | jurisdiction | participation | data-use terms | train examples | test examples |', '|---|---|---|---|---|---|---:|---:|');
  for (const s of c.sites) {
    const terms = s.terms ? [s.terms.purpose, ...(s.terms.conditions ?? [])].join('; ') : '–';
    L.push(`| ${cell(s.name)} | ${cell(s.institution ?? '–')} | ${s.institutionKind ?? '–'} | ${s.jurisdiction ?? '–'} | ${cell(s.participation)} | ${cell(terms)} | ${s.trainExamples ?? '–'} | ${s.testExamples ?? '–'} |`);
  }
  L.push('', `Jurisdictions: ${c.jurisdictions.join(', ') || 'none declared'}.`, '');
  L.push('## Training', '', `Strategy ${c.training.strategy}${Object.keys(c.training.strategyParams).length ? ` (${Object.entries(c.training.strategyParams).map(([k, v]) => `${k} ${String(v)}`).join(', ')})` : ''}, ${c.training.rounds} rounds; ${describeModel(c.training.model)}; each round ${describeFit(c.training.fit)}; seed ${c.training.seed ?? '–'}.`, '');
  if (c.tensors) {
    L.push(`The model has ${c.tensors.tensors.length} tensors, ${c.tensors.parameters} parameters (\`setu model download\` writes them as safetensors):`, '');
    L.push('| tensor | dtype | shape | rule |', '|---|---|---|---|');
    for (const t of c.tensors.tensors) L.push(`| \`${cell(t.name)}\` | ${t.dtype} | [${t.shape.join(', ')}] | ${t.rule === 'aggregate' ? 'aggregated' : t.rule === 'local' ? 'kept at each site' : 'frozen'} |`);
    L.push('');
  }
  L.push('## Privacy guarantees', '', `- SecAgg+: ${c.privacy.secagg ? 'yes' : 'none'}`, `- Differential privacy: ${c.privacy.dp ? `(ε, δ) = (${c.privacy.dp.epsilon}, ${c.privacy.dp.delta})` : 'none'}`);
  for (const x of c.privacy.spent) L.push(`  - spent by ${x.site} (privacy ledger): ε = ${x.epsilon.toFixed(3)} at δ = ${x.delta} (${x.mechanism})`);
  L.push('', c.privacy.summary, '');
  L.push('## Performance', '', 'Measured by each site on its own test split in the final evaluation round. **All sites** is the mean of the sites\' figures weighted by their test examples (no test set was pooled: the rows stayed at the sites).', '');
  const names = [...new Set([...Object.keys(c.performance.acrossSites), ...c.sites.flatMap((s) => Object.keys(s.metrics))])].sort();
  L.push(`| site | ${names.join(' | ')} |`, `|---|${names.map(() => '---:').join('|')}|`);
  for (const s of c.sites) L.push(`| ${cell(s.name)} | ${names.map((n) => f4(s.metrics[n])).join(' | ')} |`);
  L.push(`| **all sites** | ${names.map((n) => f4(c.performance.acrossSites[n])).join(' | ')} |`, '');
  if (c.performance.metric && c.performance.best && c.performance.worst) {
    L.push(`Best site on ${c.performance.metric}: ${c.performance.best.site} (${f4(c.performance.best.value)}); worst: ${c.performance.worst.site} (${f4(c.performance.worst.value)}); gap ${f4(c.performance.gap)}.`, '');
  }
  L.push('## Compute used', '', `${c.compute.total.tasks} tasks, ${duration(c.compute.total.cpuSeconds)} of CPU time, ${duration(c.compute.total.gpuSeconds)} of GPU time.`, '');
  L.push('| country | CPU time contributed | GPU time contributed | CPU time consumed | GPU time consumed |', '|---|---:|---:|---:|---:|');
  for (const r of c.compute.byCountry) L.push(`| ${r.country} | ${duration(r.contributedCpuSeconds)} | ${duration(r.contributedGpuSeconds)} | ${duration(r.consumedCpuSeconds)} | ${duration(r.consumedGpuSeconds)} |`);
  L.push('', '## Seal', '', c.audit ? `Audit chain head at writing: entry ${c.audit.seq}, hash \`${c.audit.head}\`. Verify with \`setu audit verify\`; a chain shorter than this, or with a different hash at entry ${c.audit.seq}, has been tampered with.` : 'No audit chain was available when this card was written.', '');
  return L.join('\n');
}

/** Reads everything a card states from the store. `completedAt` defaults to the study's last update. */
export async function gatherModelCard(store: Store, studyId: string): Promise<ModelCard> {
  const study = await store.getStudy(studyId);
  if (!study) throw new Error(`no study ${studyId}`);
  const spec = JSON.parse(study.spec) as StudySpec;
  const members = await store.listMemberships();
  const participants = JSON.parse(study.participants ?? '[]') as string[];
  const lifecycle = await loadLifecycle(store, studyId);
  const invited = lifecycle ? lifecycle.sites : participants;
  const ids = [...new Set([...participants, ...invited])];
  const finalRound = spec.rounds; // the evaluate round (R+1) records metrics against model round R
  const metrics = (await store.listMetrics(studyId)).filter((m) => m.round === finalRound && m.phase === 'evaluate');
  const evalUpdates = await store.listUpdates(studyId, spec.rounds + 1);
  const sites = ids.map((id) => {
    const m = members.find((x) => x.id === id);
    const u = evalUpdates.find((x) => x.site_id === id);
    const meta = u ? (JSON.parse(u.metrics) as { evalExamples?: number }) : undefined;
    return {
      id, name: m?.name ?? id, institutionId: m?.institutionId ?? null, institution: m?.institution ?? null, jurisdiction: m?.jurisdiction ?? null,
      trainExamples: u ? u.num_examples : null, testExamples: meta?.evalExamples ?? null,
      metrics: Object.fromEntries(metrics.filter((x) => x.site_id === id).map((x) => [x.name, x.value])),
    };
  });
  const acrossSites = Object.fromEntries(metrics.filter((x) => x.site_id === null).map((x) => [x.name, x.value]));
  const mv = await store.latestModelVersion(studyId);
  const h = mv ? await blobHeader(store.blobs, mv.digest, mv.size) : undefined;
  const tensors = h ? describeTensors(headerLayout(h), resolveTensorRules(h.tensors.map((t) => t.name), spec.tensorRules)) : null;
  const head = await store.auditHead();
  const spent = await store.studySpend(studyId);
  return modelCard({
    studyId, name: study.name, spec, completedAt: study.updated_at, finalModel: mv ? { id: mv.id, digest: mv.digest } : null, tensors, lifecycle, sites,
    institutions: await store.listInstitutions(), acrossSites, usage: await store.listUsage(studyId), spent, audit: { seq: head.seq, head: head.hash },
  });
}

/**
 * Writes the card of a completed study once; later calls return the stored one, so the audit head it names
 * stays the head at completion. The engine calls this right after committing the final round; the route
 * calls it too, so a coordinator that crashed between the two still produces the card.
 */
export async function ensureModelCard(store: Store, studyId: string, now: number): Promise<ModelCardRow> {
  const existing = await store.getModelCard(studyId);
  if (existing) return existing;
  const card = await gatherModelCard(store, studyId);
  await store.putModelCard({ studyId, json: card, markdown: modelCardMarkdown(card), auditHead: card.audit?.head ?? null, createdAt: now });
  return (await store.getModelCard(studyId))!;
}

