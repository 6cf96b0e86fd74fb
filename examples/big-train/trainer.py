"""The external trainer of `setu bench big-train`: a model of any size, trained by adding a small deterministic delta.

Each weight w[i] of each tensor becomes float32(w[i] + n * 2**-12 * ((i % 7) - 3)), n being the rows of the site's
data file (the example count it reports): exact in float32, so the bench checks the committed FedAvg exactly
without running anything of this program. The arrays are the SDK's views of the one buffer it read (format="numpy")
and are changed in place, a slice at a time, so the trainer holds about one copy of the model.

BIG_TRAIN_RSS_FILE (set in site.yaml by the bench): a JSON line with the task's kind and this process's peak
resident set (ru_maxrss) is appended there when the process exits.
"""
import atexit
import json
import os
import resource

import numpy as np
import setu_trainer as setu

SLICE = 1 << 20  # elements changed at a time: the delta's temporaries (int64 indices) stay near 30 MB whatever the model
KIND = {"kind": None}


def _report():
    path = os.environ.get("BIG_TRAIN_RSS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "kind": KIND["kind"], "maxrssKiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")


atexit.register(_report)


def rows(path):
    with open(path, "rb") as f:
        return max(0, sum(1 for _ in f) - 1)  # less the header line


class BigTrain(setu.Trainer):
    def fit(self, weights, config):
        KIND["kind"] = "fit"
        n = rows(config.data_path)
        step = np.float32(n * 2.0 ** -12)
        for name in sorted(weights):
            w = weights[name].reshape(-1)  # a view: the update is written into the buffer that was read
            for start in range(0, w.size, SLICE):
                end = min(start + SLICE, w.size)
                w[start:end] += step * ((np.arange(start, end) % 7) - 3).astype(np.float32)
            config.progress(message=f"{name} done")
        return weights, n, {"loss": 0.5}

    def evaluate(self, weights, config):
        KIND["kind"] = KIND["kind"] or "evaluate"
        return rows(config.data_path), {"loss": 0.5}


setu.run(BigTrain(), format="numpy")
