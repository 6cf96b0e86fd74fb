#!/usr/bin/env python3
"""Writes the study's initial weights: DigitsCNN as torch initialises it for a seed (BatchNorm's running statistics
and its I64 num_batches_tracked counters included).

    python3 make_init.py --out init.safetensors [--seed 0]
"""
import argparse

import torch
import setu_trainer.torch as st

from digits import DigitsCNN


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    st.save(DigitsCNN().state_dict(), a.out, {"model": "digits-cnn"})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
