/**
 * What `setu … --help` prints. Every command the dispatcher in main.ts knows has an entry here (its
 * arguments and one line on what it does); the flags a help page lists are the ones the command's own
 * `parse()` call declares (args.ts renders them in help mode), described by FLAGS below, so a flag
 * cannot exist without appearing in the help, and help.test.ts fails on a flag without a description.
 */

export interface CommandHelp {
  /** Words after `setu`, e.g. "study create". */
  path: string;
  /** Positional arguments and the flags that matter most, as the usage line shows them. */
  args: string;
  summary: string;
  /** Descriptions of this command's flags where the shared ones below would mislead (with its own value name, if any). */
  flags?: Record<string, string | { value: string; text: string }>;
}

/** `setu analytics` queries: the federated statistics and survival analysis, run locally on CSV files (analytics.ts). */
const ANALYTICS: [string, string, string][] = [
  ['count', '[--by a,b]', 'counts overall, by category, or cross-tabulated'],
  ['summary', '--column C [--by G] [--stats mean,sd,…]', 'mean, variance, standard deviation, minimum and maximum of a column'],
  ['histogram', '--column C --range LO,HI --bins K', 'a histogram of a column'],
  ['quantiles', '--column C --probs 0.25,0.5 --range LO,HI --bins K', 'quantiles of a column (from a fine histogram)'],
  ['missingness', '[--columns a,b]', 'missing values per column and site'],
  ['km', '[--by G] [--conf-level 0.95]', 'Kaplan–Meier curves with Greenwood confidence intervals and medians'],
  ['logrank', '--group G [--strata none|site]', 'the log-rank test between groups'],
  ['cox', '--covariates a,b [--ties efron|breslow]', 'a Cox proportional-hazards model'],
  ['run', '', "every query of the study file's analytics: block"],
];
const ANALYTICS_FLAGS: CommandHelp['flags'] = {
  study: { value: 'FILE', text: 'a study file with a dataSchema: block (or a bare data schema); its time and event columns drive survival queries' },
  data: { value: 'FILE', text: 'one pooled CSV file' }, 'split-by': { value: 'COLUMN', text: 'make one site per value of this column of --data' }, site: { value: 'NAME=FILE', text: "one site's CSV file (repeatable)" },
  policy: { value: 'FILE', text: 'a site policy file (YAML) for every site' }, out: { value: 'DIR', text: 'write each result as CSV (and SVG) into this directory' },
  'min-cell': "each site's minimum cell count (default 1: nothing suppressed)", by: 'group by these columns', column: 'the column', columns: 'these columns',
  stats: 'statistics: mean, variance, sd, min, max', bounds: 'LO,HI bounds of the column', range: 'LO,HI range of the histogram', bins: 'number of bins',
  probs: 'probabilities, e.g. 0.25,0.5,0.75', 'conf-level': 'confidence level (default 0.95)', 'conf-type': 'log, log-log or plain',
  group: 'the grouping column', strata: 'none or site', covariates: 'the covariate columns', ties: 'efron or breslow',
  'time-resolution': 'round times up to multiples of this before survival queries',
};

export const COMMANDS: CommandHelp[] = [
  { path: 'demo', args: '[--seed N] [--rounds R] [--data-dir D] [--json] [--secagg] [--dp-epsilon E …] [--dashboard]', summary: 'the four-hospital India–Japan demo consortium on real data, on this machine',
    flags: { 'data-dir': 'keep the coordinator, site configs and logs in DIR (run again on the same DIR to start afresh there)', rounds: 'FedAvg rounds (default 15)', seed: 'seed of the study and the baselines (a non-negative integer, default 42)', verbose: 'show agent and coordinator logs', json: 'print one JSON object with the results on stdout' } },
  { path: 'coordinator start', args: '[--data-dir D] [--db postgres://…] [--blob-dir D] [--host H] [--port P] [--tls-cert F --tls-key F] [--log-level L] [--max-uploads N …]', summary: 'run the coordinator (API, round engine, dashboard)',
    flags: { 'data-dir': 'where the coordinator keeps coordinator.key, admin.key and its SQLite file (default .setu)' } },

  { path: 'site invite', args: '--name N [--institution I] [--jurisdiction IN|JP|…] [--ttl-hours H] [--out FILE]', summary: 'a one-time token with which a hospital enrols its site agent',
    flags: { out: 'write the token to FILE (mode 600) instead of printing it' } },
  { path: 'site enrol', args: '--config site.yaml --token <invite> | --token-file F', summary: "at the hospital: make the site's key pair and register it with the coordinator" },
  { path: 'site start', args: '--config site.yaml [--token <invite>] [--log-level L]', summary: 'at the hospital: run the site agent (long-polls for tasks; safe to restart; one agent per state directory; status in its state dir: setu site status)' },
  { path: 'site status', args: '[--state-dir D | --config site.yaml] [--json]', summary: "at the hospital: the agent's own status from its state directory (running, last contact, last task and error, budget left per study)",
    flags: { 'state-dir': { value: 'DIR', text: "the agent's state directory (default ./state)" }, config: { value: 'FILE', text: 'read the state directory from this site.yaml' } } },
  { path: 'site list', args: '', summary: 'sites, their institution and country, online or not, last seen' },
  { path: 'site revoke', args: '<site-id or name>', summary: "refuse a site's key from now on" },
  { path: 'site run-task', args: '--workdir DIR', summary: 'the training step a placed job runs on partner compute (Slurm, Kubernetes, local)' },
  { path: 'site dataset', args: 'check|preview|explain --config site.yaml --dataset KEY [--study study.yaml]', summary: "at the hospital: read a dataset's source as the agent will (read-only): its problems, first rows, or the queries it runs" },

  { path: 'user add', args: '--name N --role consortium_admin|study_lead|site_admin|auditor [--institution I] [--out FILE]', summary: 'invite a person with a role (consortium admin)',
    flags: { out: 'write the invite token to FILE (mode 600) instead of printing it' } },
  { path: 'user enrol', args: '--token <invite> | --token-file F [--key-file F]', summary: 'on your own machine: make your key pair and register its public half',
    flags: { 'key-file': 'where to write your new key (default ~/.setu/key.json; SETU_KEY_FILE)', coordinator: "the coordinator's URL (default: SETU_COORDINATOR, else http://127.0.0.1:7070)" } },
  { path: 'user list', args: '', summary: 'people, roles, institutions' },
  { path: 'user revoke', args: '<user-id or name>', summary: "refuse a person's key from now on" },
  { path: 'user whoami', args: '', summary: 'who the coordinator says your key is' },

  { path: 'institution add', args: '--id I --name N --kind hospital|university|compute_centre|company --jurisdiction IN|JP|…', summary: 'register an institution of the consortium' },
  { path: 'institution list', args: '', summary: 'institutions with their sites and compute' },
  { path: 'institution link', args: '<institution-id> --site <site>', summary: 'make an enrolled site belong to an institution (and its jurisdiction)' },

  { path: 'study create', args: '--file study.yaml [--weights init.safetensors]', summary: 'a draft study from a YAML or JSON file, checked against the sites before anything runs',
    flags: { file: 'the study file (YAML or JSON; see README "Several machines")', weights: { value: 'FILE', text: 'the initial weights (safetensors) of a custom model (docs/python-sdk.md); checked here before the draft exists' } } },
  { path: 'study list', args: '', summary: 'every study with its status and progress' },
  { path: 'study propose', args: '<study>', summary: 'send a draft to the sites it names for their approval' },
  { path: 'study approve', args: '<study> --site S --terms "…" [--condition "…"]… [--expires DATE]', summary: "a site admin approves the use of their site's data, under data-use terms" },
  { path: 'study decline', args: '<study> --site S --reason "…"', summary: 'a site admin declines' },
  { path: 'study withdraw', args: '<study> --site S --reason "…"', summary: "a site admin withdraws their site's data from the next round on" },
  { path: 'study policy-check', args: '<study>', summary: 'what still stands between the study and its start: approvals and jurisdiction rules' },
  { path: 'study start', args: '<study>', summary: 'start a study (approved sites become its participants)' },
  { path: 'study status', args: '<study> [--watch]', summary: 'rounds, metrics per round and per site, refused updates, and each site that cannot run its task (task errors)',
    flags: { watch: 'keep showing the status until the study ends (redrawn in place on a terminal)', interval: 'seconds between refreshes with --watch (default 2)' } },
  { path: 'study stop', args: '<study> [--reason "…"]', summary: 'stop a study for good (audited)' },
  { path: 'study governance', args: '<study>', summary: 'approvals, terms, sign-offs and the history of transitions' },
  { path: 'study privacy', args: '<study> [--entries]', summary: '(ε, δ) spent per site against its budget' },
  { path: 'study results', args: '<study> [--json | --csv] [--query NAME|N] [--plot FILE.svg] [--out DIR]', summary: "an analytics study's combined results: a table per query, the sites that refused it and why, CSV and plots",
    flags: { csv: 'print the CSV of the chosen query (--query) on stdout', query: { value: 'NAME|N', text: 'only this query (its name, or its position from 1)' }, plot: { value: 'FILE', text: 'write the plot of the chosen query as SVG (Kaplan–Meier curves, forest plot, histogram)' }, out: { value: 'DIR', text: "write every chosen query's CSV and SVG files into DIR" } } },
  { path: 'study export', args: '<study> [--format csv|json] [--out F]', summary: 'metrics per round and per site, for a spreadsheet or a script',
    flags: { out: 'write to FILE instead of stdout', format: 'csv (one row per round, site and metric; default) or json' } },

  { path: 'model card', args: '<study> [--json] [--out DIR]', summary: 'the model card of a completed study (Markdown)', flags: { out: { value: 'DIR', text: 'also write <study>.model-card.md and .json into DIR' } } },
  { path: 'model download', args: '<study> [--round R] --out model.safetensors', summary: 'the global model (safetensors) after the last round, or after round R',
    flags: { out: 'the file to write (safetensors)', round: 'the model after this fit round (default: the latest)' } },
  { path: 'model signoff', args: '<study> [--site S]', summary: 'sign off the release of a completed study\'s model (a site admin for their site; the lead or an admin for the consortium)',
    flags: { site: 'sign off for this site (site admins)' } },
  { path: 'model release', args: '<study> [--status]', summary: 'release the model once every sign-off the policies ask for is in',
    flags: { status: 'only show the sign-offs so far and what is missing' } },

  { path: 'audit verify', args: '[--file export.jsonl] [--public-key KEY] [--witness FILE]… [--save-witness FILE] [--ephemeral]', summary: 'recompute every hash, signature and link of the audit log here (or of an export, offline), and check it against witnesses',
    flags: { file: "verify this export offline instead of the coordinator's log", out: '(used by audit export)', 'public-key': "pin the coordinator's audit key (base64url)",
      witness: "a witness to check the log against: a site's audit-witness.json, a saved checkpoint or an earlier export (repeatable); a disagreeing one is named", 'save-witness': 'after an intact verify, keep its signed checkpoint in FILE as your own witness', ephemeral: 'keep no witness of this verify in $SETU_HOME/audit-witnesses (kept and checked by default)' } },
  { path: 'audit export', args: '--out audit.jsonl', summary: 'the audit log as JSON Lines with a signed header, for an external auditor',
    flags: { out: 'the file to write', file: '(used by audit verify)', 'public-key': '(used by audit verify)', witness: '(used by audit verify)', 'save-witness': '(used by audit verify)', ephemeral: '(used by audit verify)' } },
  { path: 'audit list', args: '', summary: 'audit entries as a table', flags: { file: '(used by audit verify)', out: '(used by audit export)', 'public-key': '(used by audit verify)', witness: '(used by audit verify)', 'save-witness': '(used by audit verify)', ephemeral: '(used by audit verify)' } },

  { path: 'compute list', args: '', summary: "the consortium's compute resources, capacity and what is free now" },
  { path: 'compute add', args: '--file resources.yaml', summary: 'register or update compute resources (docs/resources.md)', flags: { file: 'a resource, a list of them, or {resources: [...]} (YAML or JSON)' } },
  { path: 'compute queues', args: '', summary: 'placed tasks per resource, with scheduler job ids' },
  { path: 'compute usage', args: '[--study ID] [--csv]', summary: 'CPU and GPU time per study, institution and country, and each task\'s CPU-, GPU- and wall-seconds', flags: { csv: 'each task\'s usage as CSV (study, task, site, resource, scheduler, job, CPU-s, CPU basis, GPU-s, wall-s)' } },
  { path: 'compute ledger', args: '[--study ID] [--countries IN,JP] | --file usage.json', summary: 'compute contributed against consumed, by country and institution',
    flags: { file: 'render the ledger offline from usage records in FILE instead of asking the coordinator' } },
  { path: 'compute slurm-check', args: '[--partition P] [--account A] [--workdir DIR]', summary: 'prove the local Slurm cluster runs a job and accounts for it' },
  { path: 'compute queue', args: '[--all]', summary: "Setu's jobs in the local Slurm queue" },
  { path: 'compute resources', args: '--file resources.yaml', summary: 'validate a resource file offline and list it', flags: { file: 'the resource file (YAML or JSON)' } },
  { path: 'compute place', args: '--file resources.yaml --site S --jurisdiction IN [--cpus N] [--gpus N] [--ram GiB]', summary: "where a site's training would be placed, or why it cannot be", flags: { file: 'the resource file (YAML or JSON)' } },
  { path: 'compute kubernetes-manifest', args: '--file job.yaml --image IMAGE', summary: 'the Kubernetes Job a training job becomes', flags: { file: 'the training job (YAML or JSON)' } },

  { path: 'bench flamby-heart', args: '[--seeds 42,43,44] [--methods …]', summary: "FLamby's Fed-Heart-Disease table, every method, against the PyTorch figures",
    flags: { out: { value: 'DIR', text: 'directory for the result files' }, 'data-dir': 'the Fed-Heart-Disease data (default: the copy bundled in data/)' } },
  { path: 'bench aggregate', args: '[--floats N] [--updates K]', summary: 'aggregation throughput against a plain-loop baseline' },
  { path: 'bench peer', args: '[--seeds …]', summary: 'Setu against the independent PyTorch reference of FLamby, seed by seed' },
  { path: 'bench secagg', args: '[--sites 10,100] [--params 100000,1000000] | --coordinator [--sites 4] [--params 25000000] [--block-words 1048576]', summary: "a round with and without SecAgg+; --coordinator: the coordinator's side of a SecAgg+ round from masked blobs on disk, unmasked block by block, against the whole masked sum in memory (round time, peak RSS, throughput; run node with --expose-gc for steadier RSS)",
    flags: { sites: { value: 'LIST', text: 'numbers of sites, comma-separated (at least 3; 4 with --coordinator)' }, params: { value: 'LIST', text: 'model sizes in parameters, comma-separated (25000000 with --coordinator)' }, 'local-steps': 'local SGD steps per round', batch: 'batch size', reps: 'timed repetitions', 'clip-range': 'SecAgg+ clip range', coordinator: "measure the coordinator's side of a round: masked blobs on disk unmasked block by block against the whole sum in memory", 'block-words': { value: 'N', text: 'words per site per unmasking block (with --coordinator; default 1048576)' }, json: 'one JSON object instead of the table' } },
  { path: 'bench dp-heart', args: '[--eps inf,10,3,1]', summary: 'accuracy against ε on the heart data', flags: { out: { value: 'DIR', text: 'directory for the result files' }, 'data-dir': 'the Fed-Heart-Disease data (default: the copy bundled in data/)' } },
  { path: 'bench sdk', args: '[--epochs 2,40] [--rounds 3]', summary: "the Python SDK's round through Setu against the same training in a plain PyTorch loop",
    flags: { epochs: 'local epochs per round, comma-separated (one run each)', rounds: 'rounds per run', python: { value: 'PATH', text: 'the Python with torch (default /usr/bin/python3)' }, keep: { value: 'DIR', text: 'keep the runs\' work directories in DIR' } } },
  { path: 'bench reads', args: '[--requests 1000] [--runs 5] [--path /v1/studies] [--as lead|site]', summary: 'concurrent signed reads at a coordinator on PostgreSQL against one on SQLite (p50, p99, failures)',
    flags: { requests: 'concurrent requests per run', runs: 'runs per backend', path: 'the API path each request GETs', as: { value: 'lead|site', text: 'who signs the requests (default the study lead; site for the task poll)' }, pg: { value: 'URL', text: 'the PostgreSQL server to make a throw-away database on (default SETU_TEST_PG or the local one)' }, 'timeout-ms': 'a request with no answer by then counts as hung' } },
  { path: 'bench async-heart', args: '[--rounds 10] [--versions 40] [--buffer 2] [--slow-ms 3000]', summary: 'synchronous FedAvg rounds against asynchronous FedBuff with one slow heart site: time to the same pooled accuracy',
    flags: { rounds: 'rounds of the synchronous study', versions: 'versions of the asynchronous study', buffer: 'updates per version (K)', 'slow-ms': 'the slow site waits this long before each fit (site.yaml testing.fitDelayMs)', 'local-steps': 'local SGD steps per task', lr: 'local learning rate', json: 'the result as JSON' } },
  { path: 'bench large-model', args: '[--params 250000000] [--sites 4] [--strategy fedavg] [--dp] [--async] [--store sqlite|postgres]', summary: "a round (FedAvg, or any strategy that streams; --dp: under client-level DP, --async: a FedBuff study) of N sites × P float32 parameters through a coordinator process: round time, its peak RSS against 2 × model + 300 MB, aggregation against memcpy, uploads against plain HTTP PUTs",
    flags: { params: 'float32 parameters of the model (up to 500,000,000)', sites: 'sites in the round', tensors: 'tensors the parameters are split into', strategy: { value: 'NAME', text: 'the study\'s strategy, one that streams at any size: fedavg (default), fedavgm, fedadam, fedyogi, fedadagrad, krum, multikrum, median, trimmedmean' }, dp: 'under client-level DP-FedAvg with central noise (σ = 1, C = 1; FedAvg)', async: 'as an asynchronous FedBuff study, one buffer of every site (FedAvg)', store: { value: 'sqlite|postgres', text: 'the coordinator\'s store (default sqlite)' }, pg: { value: 'URL', text: 'the PostgreSQL server to make a throw-away database on (default SETU_TEST_PG or the local one)' }, 'cpu-prof': { value: 'DIR', text: 'write the coordinator\'s CPU profile (node --cpu-prof) to DIR' }, json: 'one JSON object instead of the table' } },
  { path: 'bench big-train', args: '[--params 250000000] [--sites 4] [--kill-agent] [--kill-coordinator]', summary: "a fit round of a P-parameter custom model with real site agents and real external trainers (Python SDK): round time, coordinator, agent and trainer peak RSS against 2 × model + 300 MB, the committed model checked against the exact weighted mean",
    flags: { params: { value: 'P', text: 'float32 parameters of the model (up to 500,000,000)' }, sites: 'site agents (each with its own trainer process)', 'kill-agent': 'SIGKILL one agent mid-upload, restart it, and show where its upload resumed', 'kill-coordinator': 'SIGKILL the coordinator mid-round, restart it on the same data directory, and show that nothing accepted or received was lost', python: { value: 'PATH', text: 'the trainers\' Python (default /usr/bin/python3; needs NumPy)' }, json: 'one JSON object instead of the table' } },
  { path: 'bench live', args: '[--sites 100] [--procs 4] [--coordinators 1] [--store sqlite|postgres] [--model logistic|mlp] [--params P] [--rounds 3] [--prepared]', summary: 'a coordinator (or several behind one address) under N real site agents: per round wall time, requests/s, CPU, RSS, event-loop delay, errors, SQL statements, the FedAvg checked, as ratios to memcpy, sha256 and a bare POST',
    flags: { sites: 'enrolled site agents', procs: { value: 'N', text: 'worker processes the agents are spread over' }, coordinators: { value: 'N', text: 'coordinator processes on one PostgreSQL behind a round-robin TCP balancer' }, store: { value: 'sqlite|postgres', text: 'the coordinator\'s store (postgres: a throw-away database)' }, pg: { value: 'URL', text: 'the PostgreSQL server (default SETU_TEST_PG or the local one)' }, model: { value: 'logistic|mlp', text: 'the study\'s model on the heart data' }, params: { value: 'P', text: 'about this many MLP parameters (one hidden layer)' }, rounds: 'fit rounds', prepared: 'agents upload prepared updates instead of training, so the coordinator is what is measured', 'max-upload-bytes': { value: 'B', text: 'the coordinators\' --max-upload-bytes: bytes of uploads received at once (default theirs, 1 GiB), what bounds their memory for updates in flight' }, 'agent-state': { value: 'memory|disk', text: 'where the agents keep their state: tmpfs (/dev/shm, default; a thousand sites have a thousand disks) or the coordinator\'s disk' }, 'cpu-prof': { value: 'DIR', text: 'write each coordinator\'s and agent process\'s CPU profile (node --cpu-prof) to DIR' }, 'timeout-s': { value: 'S', text: 'give up on a study that has not completed within S seconds (default 1800)' }, json: 'one JSON object instead of the table' } },
  { path: 'bench csv', args: '--federation bench.yaml | --study study.yaml --site NAME=FILE …', summary: "FLamby's protocol on any CSV federation: every method, many seeds, pooled-test evaluation",
    flags: { federation: { value: 'FILE', text: "a federation file: the study and each site's CSV file" }, study: { value: 'FILE', text: 'a study file with a dataSchema' }, site: { value: 'NAME=FILE', text: "a site's CSV file (repeatable)" }, out: { value: 'DIR', text: 'directory for the result files (table, CSV, SVG)' } } },
  ...ANALYTICS.map(([sub, args, summary]) => ({ path: `analytics ${sub}`, args: `${args} --study study.yaml (--data F [--split-by C] | --site NAME=FILE …)`, summary, flags: ANALYTICS_FLAGS })),
  { path: 'sim', args: '[--sites N] [--sample K] [--rounds R]', summary: 'a simulated federation of many virtual sites in one process',
    flags: { partition: 'how the data is split over the virtual sites: synthetic-noniid (default) or heart', 'data-dir': 'the Fed-Heart-Disease data (default: the copy bundled in data/)' } },
];

/** Flags most commands share, and the rest by name; a command's own `flags` entry wins. */
export const FLAGS: Record<string, { value?: string; text: string }> = {
  coordinator: { value: 'URL', text: "the coordinator's URL (default: SETU_COORDINATOR, else http://127.0.0.1:7070)" },
  'key-file': { value: 'FILE', text: 'the key that signs your requests (default: SETU_KEY_FILE, <data-dir>/admin.key, ~/.setu/key.json, ./.setu/admin.key)' },
  'ca-file': { value: 'FILE', text: "trust this CA certificate (PEM) for an HTTPS coordinator (default: SETU_CA_FILE)" },
  'data-dir': { value: 'DIR', text: "a coordinator data directory: sign with the admin.key it holds" },
  json: { text: 'print JSON instead of a table' },
  // demo
  secagg: { text: 'aggregate every round under SecAgg+ (on by default in the demo: the IN and JP policies ask for it)' },
  'dp-epsilon': { value: 'E', text: 'train with differential privacy at target ε = E for the whole study' },
  'dp-delta': { value: 'D', text: 'the δ of the DP target (default 1e-3)' },
  'dp-level': { value: 'sample|client', text: 'sample: DP-SGD in each site (default); client: DP-FedAvg' },
  'dp-clip': { value: 'C', text: 'clipping norm (default 1 for DP-SGD, 0.1 for DP-FedAvg)' },
  dashboard: { text: 'keep the coordinator and its dashboard up after the study, until Ctrl-C' },
  rounds: { value: 'R', text: 'number of rounds' },
  seed: { value: 'N', text: 'random seed (a non-negative integer)' },
  verbose: { text: 'show more logs' },
  // coordinator start
  db: { value: 'URL', text: 'PostgreSQL connection string (default: SQLite in the data directory)' },
  'blob-dir': { value: 'DIR', text: "keep model versions and updates as files in DIR (with SQLite those over 64 KiB, smaller ones being rows of the database, default <data-dir>/blobs; with --db, PostgreSQL's shared chunk table by default)" },
  host: { value: 'H', text: 'address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)' },
  port: { value: 'P', text: 'port to listen on (default 7070; 0 picks a free one)' },
  'body-limit': { value: 'BYTES', text: 'largest request body accepted (default 64 MiB)' },
  'upload-chunk-bytes': { value: 'BYTES', text: 'largest chunk of a chunked upload (default 64 MiB, at most --body-limit)' },
  'tls-cert': { value: 'FILE', text: 'serve HTTPS with this certificate (PEM), with --tls-key' },
  'tls-key': { value: 'FILE', text: 'the private key (PEM) of --tls-cert' },
  'log-level': { value: 'LEVEL', text: 'log level: fatal, error, warn, info (default), debug, trace or silent (default: SETU_LOG_LEVEL)' },
  'max-longpolls-per-site': { value: 'N', text: 'long-polls one site may hold open at once; the next is answered 429 with Retry-After (default 2)' },
  'max-uploads': { value: 'N', text: 'uploads (fit results, masked SecAgg+ inputs) received at once by this coordinator; the next is answered 503 with Retry-After before its body is read (default 1024)' },
  'max-upload-bytes': { value: 'BYTES', text: 'bytes the uploads received at once may declare in total; the next is answered 503 with Retry-After before its body is read (default 1 GiB; one upload is always admitted)' },
  'max-uploads-per-site': { value: 'N', text: 'uploads one site may send at once; the next is answered 429 with Retry-After (default 2)' },
  'max-round-bytes': { value: 'BYTES', text: 'bytes of accepted updates one open round may hold until it is aggregated; the next update is answered 503 with Retry-After (default 2 GiB)' },
  'max-streams-per-user': { value: 'N', text: 'live event streams (dashboards) one user may hold open at once; the next is answered 429 (default 4)' },
  // sites and users
  name: { value: 'N', text: 'the name (letters, digits, . _ -)' },
  institution: { value: 'I', text: 'the institution (id or name) it belongs to' },
  jurisdiction: { value: 'CC', text: 'ISO country code of where the data is held (IN, JP, …)' },
  'ttl-hours': { value: 'H', text: 'hours until the invite expires (default 72)' },
  config: { value: 'FILE', text: "the site's site.yaml (docs/site-config.md)" },
  token: { value: 'TOKEN', text: 'the one-time invite token' },
  'token-file': { value: 'FILE', text: 'read the invite token from FILE (as written by --out of the invite)' },
  workdir: { value: 'DIR', text: 'the work directory' },
  role: { value: 'ROLE', text: 'consortium_admin, study_lead, site_admin or auditor' },
  id: { value: 'ID', text: 'the institution id (letters, digits, . _ -)' },
  kind: { value: 'KIND', text: 'hospital, university, compute_centre or company' },
  site: { value: 'S', text: 'the site (by name)' },
  // studies
  file: { value: 'FILE', text: 'the input file' },
  watch: { text: 'keep watching' },
  interval: { value: 'S', text: 'seconds between refreshes' },
  terms: { value: 'TEXT', text: 'the purpose the data may serve (the data-use terms)' },
  condition: { value: 'TEXT', text: 'a condition of the approval (repeatable)' },
  expires: { value: 'DATE', text: 'the approval lapses on this date (ISO 8601)' },
  reason: { value: 'TEXT', text: 'why (kept in the audit log)' },
  entries: { text: 'list every DP release, not only the totals per site' },
  format: { value: 'csv|json', text: 'output format' },
  out: { value: 'FILE', text: 'the file to write' },
  round: { value: 'R', text: 'the round' },
  status: { text: 'show the state only' },
  // audit
  'public-key': { value: 'KEY', text: "the coordinator's audit public key (base64url) to pin" },
  witness: { value: 'FILE', text: 'a witness of the audit log (repeatable)' },
  'save-witness': { value: 'FILE', text: 'keep the verified checkpoint here' },
  ephemeral: { text: 'keep no witness of this verify' },
  // compute
  study: { value: 'ID', text: 'only this study' },
  countries: { value: 'CC,CC', text: 'countries to set against each other (default IN,JP)' },
  csv: { text: 'CSV on stdout (compute usage: one row per task)' },
  partition: { value: 'P', text: 'Slurm partition' },
  account: { value: 'A', text: 'Slurm account' },
  all: { text: 'every job, not only Setu\'s' },
  cpus: { value: 'N', text: 'CPUs the training needs' },
  gpus: { value: 'N', text: 'GPUs the training needs' },
  ram: { value: 'GiB', text: 'memory the training needs' },
  'gpu-mem': { value: 'GiB', text: 'least memory per GPU' },
  'gpu-type': { value: 'TYPE', text: 'GPU type: a resource\'s Slurm GRES type (a100) or model name' },
  allowed: { value: 'CC,CC', text: 'jurisdictions whose compute may train the data (default: its own)' },
  image: { value: 'IMAGE', text: 'the container image that runs `setu site run-task`' },
  namespace: { value: 'NS', text: 'Kubernetes namespace' },
  claim: { value: 'PVC', text: 'persistent volume claim holding the work directory' },
  // bench and sim
  seeds: { value: 'LIST', text: 'seeds, as 42,43,44 or a range 42-61' },
  methods: { value: 'LIST', text: 'methods: all, local, fed, or a list (Pooled,Local0,…,FedAvg,FedProx,FedAdam,FedYogi,FedAdagrad,Scaffold,Cyclic)' },
  init: { value: 'torch|setu', text: "initial model: PyTorch's nn.Linear draw (default) or Setu's own" },
  floats: { value: 'N', text: 'parameters per update' },
  updates: { value: 'K', text: 'updates per aggregation' },
  repeats: { value: 'N', text: 'timed repetitions' },
  reps: { value: 'N', text: 'timed repetitions' },
  peer: { value: 'FILE', text: "the PyTorch reference's run_peer.py" },
  python: { value: 'FILE', text: 'the Python interpreter that has torch' },
  sites: { value: 'N', text: 'number of sites' },
  params: { value: 'LIST', text: 'model sizes (parameters)' },
  'local-steps': { value: 'K', text: 'local SGD steps per round' },
  batch: { value: 'B', text: 'batch size' },
  'batch-size': { value: 'B', text: 'batch size' },
  'clip-range': { value: 'X', text: 'SecAgg+ clip range' },
  eps: { value: 'LIST', text: 'target ε values (inf for no DP)' },
  delta: { value: 'D', text: 'target δ' },
  lr: { value: 'LR', text: 'learning rate' },
  clip: { value: 'C', text: 'clipping norm' },
  sample: { value: 'K', text: 'sites sampled per round' },
  features: { value: 'F', text: 'features of the synthetic data' },
  strategy: { value: 'NAME', text: 'the aggregation strategy (FedAvg, FedProx, FedAdam, …)' },
};

export function commandHelp(path: string): CommandHelp | undefined {
  return COMMANDS.find((c) => c.path === path);
}

/** Subcommands of a group ("study" → study create, study list, …). */
export function groupCommands(group: string): CommandHelp[] {
  return COMMANDS.filter((c) => c.path === group || c.path.startsWith(`${group} `));
}

export const GROUPS = [...new Set(COMMANDS.map((c) => c.path.split(' ')[0]!))];

const SIGNING = `Operator commands reach the coordinator at --coordinator (or SETU_COORDINATOR, default
http://127.0.0.1:7070) and sign every request with your key (--key-file, SETU_KEY_FILE, ~/.setu/key.json, …);
--ca-file (or SETU_CA_FILE) trusts a private CA.`;

export function topHelp(version: string): string {
  const lines = [`setu ${version}: federated learning across hospitals in India and Japan; patient data stays at each site.`, '', 'Usage: setu <command> [options]     (setu <command> --help for its options)', ''];
  const width = Math.max(...COMMANDS.map((c) => c.path.length)) + 2;
  for (const g of GROUPS) {
    for (const c of groupCommands(g)) lines.push(`  setu ${c.path.padEnd(width)}${c.summary}`);
    lines.push('');
  }
  lines.push(SIGNING, '', 'setu --version prints the version.');
  return lines.join('\n');
}

export function groupHelp(group: string): string {
  const cs = groupCommands(group);
  const width = Math.max(...cs.map((c) => c.path.length)) + 2;
  return [`setu ${group}: ${cs.length} command(s)`, '', ...cs.map((c) => `  setu ${c.path.padEnd(width)}${c.summary}`), '', `setu ${group} <command> --help lists its options.`].join('\n');
}

interface OptionSpec { type: 'string' | 'boolean'; multiple?: boolean; short?: string; default?: unknown }

/** The help page of one command: usage, what it does, and every flag its parse() call declares. */
export function renderCommandHelp(path: string, options: Record<string, OptionSpec>, positionals: boolean): string {
  const c = commandHelp(path);
  const flags = Object.entries(options).filter(([k]) => k !== 'help');
  const rows = flags.map(([k, o]) => {
    const own = c?.flags?.[k];
    const d = typeof own === 'object' ? own : { value: FLAGS[k]?.value, text: own ?? FLAGS[k]?.text };
    const text = d.text ?? UNDOCUMENTED;
    const value = o.type === 'string' ? ` ${d.value ?? 'VALUE'}` : '';
    const dflt = o.default !== undefined && o.default !== false ? ` (default ${String(o.default)})` : '';
    return [`--${k}${value}${o.multiple ? ' …' : ''}`, `${text}${dflt}`] as const;
  });
  const width = Math.max(0, ...rows.map(([f]) => f.length)) + 2;
  const usage = `setu ${path}${c?.args ? ` ${c.args}` : positionals ? ' <argument>' : ''}`;
  const out = [`Usage: ${usage}`, '', c?.summary ?? '', ''];
  if (rows.length) out.push('Options:', ...rows.map(([f, t]) => `  ${f.padEnd(width)}${t}`), `  ${'--help'.padEnd(width)}this help`);
  if ('key-file' in options) out.push('', SIGNING);
  return out.join('\n');
}

/** What a flag without a description shows; help.test.ts fails when any help page contains it. */
export const UNDOCUMENTED = '(undocumented)';
