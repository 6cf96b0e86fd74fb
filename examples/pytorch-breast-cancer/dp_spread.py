#!/usr/bin/env python3
"""How far client-level DP noise alone moves this federation's final accuracy: DP-FedAvg of the same model, seeds and
data in plain PyTorch (each site's update clipped to C as one vector, the equal-weight mean over the m sites asked,
N(0, σ²C²) added to the sum, as Setu's coordinator does), once per noise seed. Prints the pooled test accuracy of
every draw and its spread against plain FedAvg (reference.py), from which the private variant's tolerance is set.

    python3 dp_spread.py --study study-private.yaml --data DIR --init init.safetensors --sigma 0.2388 --draws 30
"""
import argparse
import json
import os

import torch
import yaml
import setu_trainer.torch as st
from setu_trainer import task_seed

from reference import fedavg
from wdbc import evaluate, load_site, make_model, train_local


def dp_fedavg(study, data, init, sigma, noise_seed):
    sites, clip = study["sites"], study["privacy"]["dp"]["clipNorm"]
    state = st.load(init)
    gen = torch.Generator().manual_seed(noise_seed)
    for r in range(1, study["rounds"] + 1):
        total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()}
        for s in sites:
            model = make_model()
            model.load_state_dict(state)
            xtr, ytr, _, _ = data[s]
            train_local(model, xtr, ytr, study["fit"], task_seed(study.get("seed", 42), r, s), global_state=state)
            delta = {k: v.double() - state[k].double() for k, v in model.state_dict().items()}
            norm = torch.sqrt(sum(d.pow(2).sum() for d in delta.values()))
            f = min(1.0, clip / float(norm))
            for k in total:
                total[k] += delta[k] * f
        m = len(sites)
        state = {k: (state[k].double() + (total[k] + torch.normal(0.0, sigma * clip, size=tuple(total[k].shape), generator=gen, dtype=torch.float64)) / m).to(state[k].dtype) for k in state}
    model = make_model()
    model.load_state_dict(state)
    n = sum(len(data[s][2]) for s in sites)
    return sum(len(data[s][2]) * evaluate(model, data[s][2], data[s][3])["accuracy"] for s in sites) / n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--sigma", type=float, required=True, help="the study's noise multiplier (setu study status shows it)")
    p.add_argument("--draws", type=int, default=30)
    a = p.parse_args()
    with open(a.study) as f:
        study = yaml.safe_load(f)
    torch.set_num_threads(1)
    data = {s: load_site(os.path.join(a.data, f"{s}.csv")) for s in study["sites"]}
    plain = fedavg(study, a.data, a.init)[1]["pooled"]["accuracy"]
    accs = sorted(dp_fedavg(study, data, a.init, a.sigma, seed) for seed in range(a.draws))
    diffs = sorted(abs(x - plain) for x in accs)
    print(json.dumps({"plain": plain, "sigma": a.sigma, "draws": len(accs), "accuracies": accs, "meanAbsDiff": sum(diffs) / len(diffs), "maxAbsDiff": diffs[-1]}))


if __name__ == "__main__":
    main()
