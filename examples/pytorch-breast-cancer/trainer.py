#!/usr/bin/env python3
"""The site's trainer for the breast-cancer example: its whole Setu-specific part is `fit` and `evaluate`.

Run by the Setu site agent (site.yaml: trainer.kind external); it reads the site's CSV named in the task, trains the
PyTorch model of wdbc.py from the weights Setu gives it, and hands back the trained state_dict.
"""
import setu_trainer as setu

from wdbc import evaluate, load_site, make_model, train_local


class WdbcTrainer(setu.Trainer):
    def fit(self, weights, config):
        model = make_model()
        model.load_state_dict(weights)
        xtr, ytr, _, _ = load_site(config.data_path)
        loss = train_local(model, xtr, ytr, config.fit, config.seed, config.progress, global_state=weights)
        return model.state_dict(), len(xtr), {"loss": loss}

    def evaluate(self, weights, config):
        model = make_model()
        model.load_state_dict(weights)
        _, _, xte, yte = load_site(config.data_path)
        return len(xte), evaluate(model, xte, yte)


if __name__ == "__main__":
    setu.run(WdbcTrainer(), format="torch")
