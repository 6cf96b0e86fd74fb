#!/usr/bin/env python3
"""The site's trainer for the digits example: a CNN whose BatchNorm layers stay at the site (the study's tensor rules
make them local), trained and evaluated on the site's own images."""
import setu_trainer as setu
from setu_trainer.torch import device

from digits import DigitsCNN, evaluate, load_site, train_local


class DigitsTrainer(setu.Trainer):
    def fit(self, weights, config):
        model = DigitsCNN()
        model.load_state_dict(weights)
        xtr, ytr, _, _ = load_site(config.data_path)
        dev = device()  # CUDA where the site has a GPU, else the CPU
        model.to(dev)
        loss = train_local(model, xtr.to(dev), ytr.to(dev), config.fit, config.seed, config.progress)
        return model.state_dict(), len(xtr), {"loss": loss}

    def evaluate(self, weights, config):
        model = DigitsCNN()
        model.load_state_dict(weights)
        _, _, xte, yte = load_site(config.data_path)
        return len(xte), evaluate(model, xte, yte)


if __name__ == "__main__":
    setu.run(DigitsTrainer(), format="torch")
