#!/usr/bin/env python3
"""Splits the Wisconsin Diagnostic Breast Cancer data (569 tumours, 30 features; UCI, CC BY 4.0, as shipped by
scikit-learn) across hospitals: one CSV per site, each with its own train/test split, so no site sees another's.

    python3 prepare.py --out DIR [--sites 3] [--seed 7]
"""
import argparse
import csv
import os

import numpy as np
from sklearn.datasets import load_breast_cancer

# Unequal hospitals: a large referral centre and two smaller ones.
SHARES = {2: [0.6, 0.4], 3: [0.45, 0.33, 0.22], 4: [0.35, 0.3, 0.2, 0.15]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--sites", type=int, default=3, choices=sorted(SHARES))
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    malignant = 1 - data.target  # scikit-learn codes malignant as 0
    order = np.random.RandomState(a.seed).permutation(len(malignant))
    os.makedirs(a.out, exist_ok=True)
    cuts = np.cumsum([0] + [round(s * len(order)) for s in SHARES[a.sites]])
    cuts[-1] = len(order)
    for k in range(a.sites):
        rows = order[cuts[k] : cuts[k + 1]]
        path = os.path.join(a.out, f"hospital-{k + 1}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(names + ["malignant", "set"])
            for i, r in enumerate(rows):
                w.writerow([f"{v:.6g}" for v in data.data[r]] + [int(malignant[r]), "test" if i % 5 == 0 else "train"])
        print(f"{path}: {len(rows)} tumours ({int(malignant[rows].sum())} malignant)")


if __name__ == "__main__":
    main()
