"""The external-trainer contract, version 2 (docs/external-trainer.md), so a site writes only fit and evaluate.

`run(trainer)` reads task.json and weights.safetensors from the work directory the Setu agent made, calls
`trainer.evaluate(weights, config)` on the incoming weights and, for a fit task, `trainer.fit(weights, config)`, then
writes output.safetensors (the same tensor names, shapes and dtypes as given, cast back if the trainer returned
another floating dtype) and result.json, each atomically. Any error ends the process with a non-zero status and the
reason on stderr, which the agent reports as the task's error.
"""
import hashlib
import json
import math
import os
import sys
import traceback

from .safetensors import Tensor, read_safetensors, write_safetensors

__all__ = ["Task", "DpPlan", "Trainer", "run", "task_seed", "CONTRACT_VERSION"]

CONTRACT_VERSION = 2
PROGRESS_PREFIX = "setu:progress "


def task_seed(seed, round_, site, *labels):
    """A 31-bit seed for one site's task, from the study seed, the round and the site's name (and any labels).

    Every site and every round gets its own stream, and a rerun of the same task draws the same numbers; a plain
    PyTorch reference of the federation derives the same seeds with this function.
    """
    text = ":".join(["setu", str(seed), str(round_), str(site), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little") & 0x7FFFFFFF


class DpPlan:
    """The sample-level DP-SGD the agent asks for: per-example clipping to clip_norm, Gaussian noise of
    noise_multiplier × clip_norm, Poisson sampling with sample_rate, and at most `steps` steps. `seed` is secret to
    the site: seed the noise and the sampling from it (`seed_int`), never from public task data."""

    def __init__(self, d):
        self.clip_norm = float(d["clipNorm"])
        self.noise_multiplier = float(d["noiseMultiplier"])
        self.sample_rate = float(d["sampleRate"])
        self.steps = int(d["steps"])
        self.seed = str(d["seed"])

    @property
    def seed_int(self):
        return int.from_bytes(hashlib.sha256(self.seed.encode("utf-8")).digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF

    def __repr__(self):
        return f"DpPlan(clip_norm={self.clip_norm}, noise_multiplier={self.noise_multiplier}, sample_rate={self.sample_rate}, steps={self.steps})"


class Task:
    """What `fit` and `evaluate` receive as `config`: the task, its hyper-parameters and a few helpers."""

    def __init__(self, doc, work_dir):
        if doc.get("setu") != CONTRACT_VERSION:
            raise ValueError(f"task.json is contract version {doc.get('setu')!r}; this SDK speaks version {CONTRACT_VERSION}")
        self.doc = doc
        self.kind = doc["kind"]  # "fit" or "evaluate"
        self.task_id = doc["taskId"]
        self.study_id = doc["studyId"]
        self.round = doc["round"]
        self.site = doc["site"]
        self.study_seed = doc["seed"]
        self.model = doc["model"]
        #: The study's fit block: epochs or localSteps, batchSize, optimizer {kind, lr, momentum?, betas?, eps?},
        #: proximalMu (FedProx), extra. Empty for evaluate tasks.
        self.fit = doc.get("fit") or {}
        self.tensors = doc["tensors"]  # [{name, dtype, shape, rule}]
        self.data = doc["data"]
        self.data_path = doc["data"]["path"]
        self.dp = DpPlan(doc["dpSgd"]) if doc.get("dpSgd") else None
        self.paths = doc["paths"]
        self.work_dir = work_dir
        self._dp_done = None
        self._device = None

    @property
    def seed(self):
        """This site's seed for this round (shuffling, dropout, augmentation): see `task_seed`."""
        return task_seed(self.study_seed, self.round, self.site)

    def rules(self, rule):
        """Names of the tensors with `rule` ("aggregate", "local" or "skip")."""
        return [t["name"] for t in self.tensors if t["rule"] == rule]

    def progress(self, step=None, of=None, message=None, **metrics):
        """Reports progress (the agent logs it and the study lead sees it): step of `of`, running metrics, a message."""
        p = {}
        if step is not None:
            p["step"] = int(step)
        if of is not None:
            p["of"] = int(of)
        finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if finite:
            p["metrics"] = finite
        if message:
            p["message"] = str(message)[:500]
        print(PROGRESS_PREFIX + json.dumps(p), flush=True)

    def declare_device(self, type, count=1, names=None):
        """States the devices the training ran on ("cuda", 2 for DataParallel over two GPUs; "cpu", 0). The agent
        counts GPU-seconds from it for training on the site's own machine. `setu_trainer.torch.device()` declares
        the device it picks, so a trainer that uses it need not call this."""
        if not isinstance(type, str) or not type:
            raise ValueError(f"device type must be a name such as 'cuda' or 'cpu', got {type!r}")
        if not (isinstance(count, int) and 0 <= count <= 1024):
            raise ValueError(f"device count must be an integer from 0 to 1024, got {count!r}")
        d = {"type": type.lower(), "count": count}
        if names:
            d["names"] = [str(n)[:200] for n in names]
        self._device = d

    def declare_dp_sgd(self, noise_multiplier, sample_rate, steps):
        """States what the training did for DP-SGD; the agent's accountant charges the site's budget from it."""
        self._dp_done = {"noiseMultiplier": float(noise_multiplier), "sampleRate": float(sample_rate), "steps": int(steps)}


#: The device the PyTorch helper chose during the current task (setu_trainer.torch.device), if any.
_noted_device = None


def note_device(type, count, names=None):
    """Called by the framework helpers when they pick a device; a trainer's own declare_device wins."""
    global _noted_device
    _noted_device = {"type": type, "count": count, **({"names": list(names)} if names else {})}


class Trainer:
    """Subclass and implement `fit`, and `evaluate` if the trainer can measure a model (any metric names):

        fit(weights, config)      -> (weights, num_examples, metrics)
        evaluate(weights, config) -> (num_examples, metrics)

    `weights` is in the format `run` was given (a state_dict of torch tensors, NumPy arrays, or raw Tensors).
    """

    def fit(self, weights, config):  # pragma: no cover - the site implements it
        raise NotImplementedError

    def evaluate(self, weights, config):
        raise NotImplementedError


class _Raw:
    def to_user(self, tensors, task):
        return dict(tensors)

    def from_user(self, weights, like):
        return dict(weights)


def _format(name):
    """The converter for `format`; NumPy and PyTorch are imported only when asked for (the core needs neither)."""
    if not isinstance(name, str):
        return name
    if name == "raw":
        return _Raw()
    if name == "numpy":
        from .numpy import NumpyFormat

        return NumpyFormat()
    if name == "torch":
        from .torch import TorchFormat

        return TorchFormat()
    raise ValueError(f"format must be 'torch', 'numpy' or 'raw', got {name!r}")


def _check_output(out, like):
    """The same names, shapes and dtypes as given, every value finite: said here, clearly, before the agent refuses."""
    missing = [k for k in like if k not in out]
    extra = [k for k in out if k not in like]
    if missing or extra:
        raise ValueError(f"fit returned the wrong tensors: missing {missing or 'none'}, unexpected {extra or 'none'}")
    for k, t in like.items():
        o = out[k]
        if o.shape != t.shape:
            raise ValueError(f'fit returned tensor "{k}" of shape {list(o.shape)}, the model has {list(t.shape)}')
        if o.dtype != t.dtype:
            raise ValueError(f'fit returned tensor "{k}" as {o.dtype}, the model has {t.dtype}')
        if o.dtype in ("F16", "BF16", "F32", "F64") and not _all_finite(o):
            raise ValueError(f'fit returned a non-finite value in tensor "{k}"')


def _all_finite(t):
    """Whether every value of a floating tensor is finite: with NumPy a slice at a time (no Python float per value,
    no model-sized temporary), else from its values."""
    try:
        import numpy as np
    except ImportError:
        return all(math.isfinite(v) for v in t.tolist())
    if t.dtype == "BF16":
        bits = np.frombuffer(t.data, dtype="<u2")
        return all(not np.any((bits[i : i + _SLICE] & 0x7F80) == 0x7F80) for i in range(0, bits.size, _SLICE))
    a = np.frombuffer(t.data, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[t.dtype])
    return all(np.isfinite(a[i : i + _SLICE]).all() for i in range(0, a.size, _SLICE))


_SLICE = 1 << 22


def _measured(value, what):
    if not (isinstance(value, tuple) and len(value) in (2, 3)):
        raise TypeError(f"{what} must return a tuple, got {type(value).__name__}")
    return value


def _metrics(m, what):
    """Metrics as floats; an undefined one (NaN, say an AUC on one class) is left out, with a note on stderr."""
    out = {}
    for k, v in (m or {}).items():
        v = float(v)
        if math.isfinite(v):
            out[str(k)] = v
        else:
            print(f"setu_trainer: {what} metric {k!r} is {v}; not reported", file=sys.stderr)
    return out


def _write_json(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def run_task(trainer, work_dir, format="raw"):
    """Runs one task in `work_dir` (what `run` does, without the exit handling). Returns the result document."""
    with open(os.path.join(work_dir, "task.json"), encoding="utf-8") as f:
        task = Task(json.load(f), work_dir)
    # A device noted before the task (`DEVICE = st.device()` at the top of the program) counts: one process, one task.
    conv = _format(format)
    given, _ = read_safetensors(task.paths["weights"])
    result = {}
    has_eval = type(trainer).evaluate is not Trainer.evaluate if isinstance(trainer, Trainer) else hasattr(trainer, "evaluate")
    if has_eval:
        shared = getattr(conv, "shares_buffer", False)
        n, m = _measured(trainer.evaluate(conv.to_user(given, task, readonly=True) if shared else conv.to_user(given, task), task), "evaluate")
        if n > 0:
            result["evaluate"] = {"numExamples": int(n), "metrics": _metrics(m, "evaluate")}
    if task.kind == "evaluate":
        if "evaluate" not in result:
            raise RuntimeError("this is an evaluate task and the trainer has no evaluate(weights, config), or measured no example")
        _add_device(result, task)
        _write_json(task.paths["result"], result)
        return result
    out, n, m = _measured(trainer.fit(conv.to_user(given, task), task), "fit")
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"fit must return a positive number of training examples, got {n!r}")
    tensors = conv.from_user(out, given)
    _check_output(tensors, given)
    result["fit"] = {"numExamples": n, "metrics": _metrics(m, "fit")}
    if task.dp is not None:
        if task._dp_done is None:
            raise RuntimeError("the task asks for DP-SGD (config.dp) and the trainer declared none: call config.declare_dp_sgd(...)")
        result["dpSgd"] = task._dp_done
    write_safetensors(task.paths["output"], tensors, {"setu.trainer": "setu_trainer"})
    _add_device(result, task)
    _write_json(task.paths["result"], result)
    return result


def _add_device(result, task):
    d = task._device or _noted_device
    if d is not None:
        result["device"] = d


def run(trainer, format="raw"):
    """The trainer program's entry point: runs the task the agent prepared ($SETU_WORKDIR) and exits.

    `format` is how `fit` and `evaluate` receive and return weights: "torch" (an OrderedDict of torch tensors, for
    `model.load_state_dict`), "numpy" (a dict of arrays) or "raw" (setu_trainer.Tensor).
    """
    work_dir = os.environ.get("SETU_WORKDIR")
    if not work_dir:
        print("setu_trainer: SETU_WORKDIR is not set: this program is run by a Setu site agent (see docs/python-sdk.md)", file=sys.stderr)
        sys.exit(2)
    try:
        run_task(trainer, work_dir, format)
    except Exception as e:  # the agent reports the stderr tail as the task's error
        traceback.print_exc()
        print(f"setu_trainer: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


def tensors_from_lists(values, like):
    """Raw helper: {name: flat list} packed in the dtypes and shapes of `like` (name -> Tensor)."""
    return {k: Tensor.from_list(like[k].dtype, like[k].shape, v) for k, v in values.items()}
