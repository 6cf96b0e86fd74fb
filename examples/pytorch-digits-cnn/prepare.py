#!/usr/bin/env python3
"""Splits scikit-learn's handwritten digits (1,797 images of 8×8 pixels, as Debian's python3-sklearn ships them)
across sites whose "scanners" differ: each site's images have their own contrast and brightness, the kind of shift
between hospitals that FedBN's site-local BatchNorm absorbs.

    python3 prepare.py --out DIR [--sites 3] [--seed 3]
"""
import argparse
import csv
import os

import numpy as np
from sklearn.datasets import load_digits

# (contrast, brightness) of each site's scanner, in pixel units of 0..16.
SCANNERS = [(1.0, 0.0), (0.6, 4.0), (1.3, -2.0), (0.8, 2.0)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--sites", type=int, default=3, choices=[2, 3, 4])
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args()
    d = load_digits()
    order = np.random.RandomState(a.seed).permutation(len(d.target))
    os.makedirs(a.out, exist_ok=True)
    for k, rows in enumerate(np.array_split(order, a.sites)):
        contrast, brightness = SCANNERS[k]
        path = os.path.join(a.out, f"site-{k + 1}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([f"p{i}" for i in range(64)] + ["digit", "set"])
            for i, r in enumerate(rows):
                pixels = np.clip(d.data[r] * contrast + brightness, 0, 16)
                w.writerow([f"{v:.3g}" for v in pixels] + [int(d.target[r]), "test" if i % 5 == 0 else "train"])
        print(f"{path}: {len(rows)} images, contrast {contrast}, brightness {brightness:+}")


if __name__ == "__main__":
    main()
