#!/usr/bin/env python3
"""Plain-PyTorch FedAvg of the same model, seeds and data as the Setu study, in one process with no Setu in the loop:
each round every site trains from the global model with wdbc.train_local and the seed the SDK's task_seed gives that
site and round, and the new global model is the example-weighted mean (float64, rounded to float32). Prints JSON.

    python3 reference.py --study study.yaml --data DIR --init init.safetensors
"""
import argparse
import json
import os
import time

import torch
import yaml
import setu_trainer.torch as st
from setu_trainer import task_seed

from wdbc import evaluate, load_site, make_model, train_local


def fedavg(study, data_dir, init):
    sites = study["sites"]
    data = {s: load_site(os.path.join(data_dir, f"{s}.csv")) for s in sites}
    state = st.load(init)
    rounds = []
    for r in range(1, study["rounds"] + 1):
        started = time.perf_counter()
        results = []
        for s in sites:
            model = make_model()
            model.load_state_dict(state)
            xtr, ytr, _, _ = data[s]
            train_local(model, xtr, ytr, study["fit"], task_seed(study.get("seed", 42), r, s), global_state=state)
            results.append((model.state_dict(), len(xtr)))
        total = sum(n for _, n in results)
        state = {k: (sum(sd[k].double() * n for sd, n in results) * (1.0 / total)).to(state[k].dtype) for k in state}
        rounds.append(time.perf_counter() - started)
    model = make_model()
    model.load_state_dict(state)
    per_site = {s: (len(data[s][2]), evaluate(model, data[s][2], data[s][3])) for s in sites}
    n = sum(k for k, _ in per_site.values())
    pooled = {m: sum(k * v[m] for k, v in per_site.values()) / n for m in ("loss", "accuracy", "auc")}
    return state, {"pooled": pooled, "perSite": {s: v for s, (_, v) in per_site.items()}, "roundSeconds": rounds}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--save", help="also write the final model here (safetensors)")
    a = p.parse_args()
    with open(a.study) as f:
        study = yaml.safe_load(f)
    state, report = fedavg(study, a.data, a.init)
    if a.save:
        st.save(state, a.save)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
