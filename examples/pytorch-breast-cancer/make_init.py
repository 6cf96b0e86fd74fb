#!/usr/bin/env python3
"""Writes the study's initial weights: the model of wdbc.py as torch initialises it for a seed.

    python3 make_init.py --out init.safetensors [--seed 42]
"""
import argparse

import torch
import setu_trainer.torch as st

from wdbc import make_model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    st.save(make_model().state_dict(), a.out, {"model": "wdbc-mlp", "seed": str(a.seed)})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
