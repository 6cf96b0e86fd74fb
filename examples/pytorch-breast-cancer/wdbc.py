"""The model, the data and the local training of the breast-cancer example, shared by the site's trainer
(trainer.py, through Setu) and the plain-PyTorch FedAvg reference (reference.py), so both run the same code."""
import csv
import math

import torch
from torch import nn

FEATURES = 30


def make_model():
    """A small PyTorch network, not one of Setu's built-in families: 30 -> 32 -> 16 -> 1 with dropout."""
    return nn.Sequential(
        nn.Linear(FEATURES, 32), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(32, 16), nn.ReLU(),
        nn.Linear(16, 1),
    )


def load_site(path):
    """A site's CSV (30 features, `malignant`, `set`): train and test tensors, standardised with the site's own
    training mean and standard deviation (nothing about the data leaves the site)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c not in ("malignant", "set")]
    if len(cols) != FEATURES:
        raise ValueError(f"{path}: expected {FEATURES} feature columns, found {len(cols)}")

    def part(name):
        sel = [r for r in rows if r["set"] == name]
        x = torch.tensor([[float(r[c]) for c in cols] for r in sel], dtype=torch.float32)
        y = torch.tensor([[float(r["malignant"])] for r in sel], dtype=torch.float32)
        return x, y

    (xtr, ytr), (xte, yte) = part("train"), part("test")
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    return (xtr - mean) / std, ytr, (xte - mean) / std, yte


def train_local(model, x, y, fit, seed, progress=None, global_state=None):
    """Local training as the study's fit block asks (epochs or localSteps, batchSize, SGD with momentum, FedProx's
    proximalMu), from `seed` alone: the shuffling and the dropout masks. Returns the mean training loss."""
    from setu_trainer.torch import proximal_term

    torch.set_num_threads(1)  # the same float sums in every process
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt_cfg = fit["optimizer"]
    if opt_cfg["kind"] != "sgd":
        raise ValueError("this example trains with SGD")
    opt = torch.optim.SGD(model.parameters(), lr=opt_cfg["lr"], momentum=opt_cfg.get("momentum", 0.0))
    n, bs = len(x), fit["batchSize"]
    per_epoch = math.ceil(n / bs)
    steps = fit.get("localSteps") or fit["epochs"] * per_epoch
    mu = fit.get("proximalMu", 0.0)
    model.train()
    total, order = 0.0, None
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=gen)
        idx = order[(step % per_epoch) * bs : (step % per_epoch + 1) * bs]
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
        if mu:
            loss = loss + proximal_term(model, global_state, mu)
        loss.backward()
        opt.step()
        total += loss.item()
        if progress and (step + 1) % per_epoch == 0:
            progress(step=step + 1, of=steps, loss=total / (step + 1))
    return total / steps


def auc(scores, labels):
    """Area under the ROC curve: the chance that a malignant tumour scores above a benign one (ties count half)."""
    s, y = scores.double().ravel(), labels.ravel() > 0.5
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")  # one class only: undefined (the SDK leaves it out)
    above = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
    return (above / (len(pos) * len(neg))).item()


def evaluate(model, x, y):
    """Loss, accuracy and AUC of the model on (x, y): the names Setu's own models report."""
    model.eval()
    with torch.no_grad():
        z = model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(z, y).item()
    acc = ((z > 0).float() == y).float().mean().item()
    return {"loss": loss, "accuracy": acc, "auc": auc(z, y)}
