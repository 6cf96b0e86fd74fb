"""The convolutional network, the data and the local training of the digits example (trainer.py's only code)."""
import csv
import math

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two convolution blocks with BatchNorm, then a linear classifier: 8×8 grey images, ten classes."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


def load_site(path):
    """A site's CSV (64 pixels p0…p63 in 0..16, `digit`, `set`) as image tensors [n, 1, 8, 8] and labels."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))

    def part(name):
        sel = [r for r in rows if r["set"] == name]
        x = torch.tensor([[float(r[f"p{i}"]) / 16.0 for i in range(64)] for r in sel], dtype=torch.float32).reshape(-1, 1, 8, 8)
        return x, torch.tensor([int(r["digit"]) for r in sel])

    return (*part("train"), *part("test"))


def train_local(model, x, y, fit, seed, progress=None):
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    o = fit["optimizer"]
    opt = torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o.get("momentum", 0.0))
    n, bs = len(x), fit["batchSize"]
    per_epoch = math.ceil(n / bs)
    steps = fit.get("localSteps") or fit["epochs"] * per_epoch
    model.train()
    total = 0.0
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=gen)
        idx = order[(step % per_epoch) * bs : (step % per_epoch + 1) * bs]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.item()
        if progress and (step + 1) % 10 == 0:
            progress(step=step + 1, of=steps, loss=total / (step + 1))
    return total / steps


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        z = model(x)
    return {"loss": nn.functional.cross_entropy(z, y).item(), "accuracy": (z.argmax(1) == y).float().mean().item()}
