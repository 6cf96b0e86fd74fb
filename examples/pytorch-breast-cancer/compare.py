#!/usr/bin/env python3
"""Compares the Setu study's final model with the plain-PyTorch FedAvg reference, on each site's test split.

    python3 compare.py study.json reference.json [--tolerance 0.01]

study.json is `setu study status <id> --json`; reference.json is reference.py's output. Exits 1 when the final
pooled accuracies differ by more than the tolerance.
"""
import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("reference")
    p.add_argument("--tolerance", type=float, default=0.01)
    a = p.parse_args()
    with open(a.study) as f:
        study = json.load(f)
    with open(a.reference) as f:
        ref = json.load(f)
    if study["status"] != "completed":
        sys.exit(f"the study is {study['status']}: {study.get('error')}")
    final = study["spec"]["rounds"]

    def setu(site, name):
        return next(m["value"] for m in study["metrics"] if m["round"] == final and m["phase"] == "evaluate" and m["site"] == site and m["name"] == name)

    print(f"final model after {final} rounds, on each site's test split")
    print(f"{'site':<12} {'Setu acc':>9} {'PyTorch acc':>12} {'Setu AUC':>9} {'PyTorch AUC':>12}")
    for site, m in ref["perSite"].items():
        print(f"{site:<12} {setu(site, 'accuracy'):>9.4f} {m['accuracy']:>12.4f} {setu(site, 'auc'):>9.4f} {m['auc']:>12.4f}")
    got, want = setu(None, "accuracy"), ref["pooled"]["accuracy"]
    print(f"{'pooled':<12} {got:>9.4f} {want:>12.4f} {setu(None, 'auc'):>9.4f} {ref['pooled']['auc']:>12.4f}")
    diff = abs(got - want)
    verdict = "within" if diff <= a.tolerance else "OUTSIDE"
    print(f"pooled accuracy differs by {diff:.4f}: {verdict} the tolerance of {a.tolerance}")
    json.dump({"setu": got, "reference": want, "difference": diff, "tolerance": a.tolerance}, sys.stderr)
    print(file=sys.stderr)
    sys.exit(0 if diff <= a.tolerance else 1)


if __name__ == "__main__":
    main()
