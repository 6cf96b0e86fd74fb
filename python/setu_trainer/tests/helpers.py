"""Builds a work directory the way the Setu agent does (contract version 2), for the SDK's tests."""
import atexit
import json
import os
import shutil
import tempfile

import setu_trainer
from setu_trainer import write_safetensors


def temp_dir():
    d = tempfile.mkdtemp(prefix="setu-sdk-test-")
    atexit.register(shutil.rmtree, d, True)
    return d


def make_task(weights, kind="fit", fit=None, rules=None, dp=None, data_path="/nonexistent/data.csv", round_=1, site="alpha", seed=42):
    work = temp_dir()
    paths = {k: os.path.join(work, f) for k, f in [("weights", "weights.safetensors"), ("output", "output.safetensors"), ("result", "result.json")]}
    paths["workDir"] = work
    write_safetensors(paths["weights"], weights)
    rules = rules or {}
    doc = {
        "setu": 2, "kind": kind, "taskId": f"s.r{round_}.{site}", "studyId": "s", "round": round_, "site": site, "seed": seed,
        "model": {"kind": "custom", "name": "test"},
        "tensors": [{"name": k, "dtype": t.dtype, "shape": list(t.shape), "rule": rules.get(k, "aggregate")} for k, t in weights.items()],
        "data": {"path": data_path}, "paths": paths,
    }
    if kind == "fit":
        doc["fit"] = fit or {"epochs": 1, "batchSize": 4, "optimizer": {"kind": "sgd", "lr": 0.1}}
    if dp:
        doc["dpSgd"] = dp
    with open(os.path.join(work, "task.json"), "w") as f:
        json.dump(doc, f)
    return work, paths


def read_result(paths):
    with open(paths["result"]) as f:
        return json.load(f)


def load_task(work):
    """The Task object `fit` would get for the task in `work`."""
    with open(os.path.join(work, "task.json")) as f:
        return setu_trainer.Task(json.load(f), work)
