#!/usr/bin/env python3
"""A Setu external trainer in plain Python (standard library only): logistic regression.

It shows the whole contract of docs/external-trainer.md (version 2) in one file, without the Python SDK
(python/setu_trainer), which does steps 1, 2, 5 and 6 for you:
  1. read task.json (path in $SETU_TASK, or <$SETU_WORKDIR>/task.json),
  2. read the weights to start from in weights.safetensors,
  3. read the site's CSV named in the task and encode it with the study's data schema,
  4. evaluate the incoming weights on the test rows; for a fit task, make the local optimisation steps it asks for,
  5. print progress lines ("setu:progress {json}") on stdout,
  6. write output.safetensors (fit: same tensor names, shapes and dtypes) and result.json.
Errors go to stderr with a non-zero exit status.

Supported: model kind "logistic"; SGD (optional momentum) and the FedProx term; a data schema
with numeric and categorical features, a binary task, a split column, and normalisation
'none', 'site' or 'global' (statistics given in the task). A PyTorch or R trainer follows the
same steps with its own libraries.
"""
import csv
import json
import math
import os
import random
import struct
import sys

MISSING = {"", "?", "NA", "na", "N/A", "n/a"}


def fail(msg, code=2):
    print(f"logistic_trainer: {msg}", file=sys.stderr)
    sys.exit(code)


# ---- safetensors (https://github.com/huggingface/safetensors, "Format") ----

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    buf = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        fmt = {"F32": "f", "F64": "d"}.get(info["dtype"])
        if fmt is None:
            fail(f"unsupported dtype {info['dtype']} in {path}")
        count = (end - begin) // struct.calcsize(fmt)
        out[name] = (list(info["shape"]), list(struct.unpack(f"<{count}{fmt}", buf[begin:end])))
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        shape, values = tensors[name]
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)  # align the byte buffer to 8, as the spec allows
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    os.replace(tmp, path)  # a reader never sees a half-written file


# ---- data: the study's schema applied to the site's CSV ----

def as_number(v):
    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def level_index(levels, v):
    if v in levels:
        return levels.index(v)
    x = as_number(v)
    for i, lv in enumerate(levels):
        if x is not None and as_number(lv) == x:
            return i
    return -1


def load_rows(data, which):
    schema = data.get("schema")
    if not schema:
        fail("task.data.schema is required (the study's data schema)")
    task = schema["task"]
    if task["kind"] != "binary":
        fail("this example trains binary tasks only")
    split = schema["split"]
    if split["kind"] != "column":
        fail("this example needs a split column (the seeded stratified split is Setu's own)")
    with open(data["path"], newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        col = {h: i for i, h in enumerate(header)}
        used = [c["name"] for c in schema["features"]] + [task["label"], split["column"]]
        for c in used:
            if c not in col:
                fail(f'column "{c}" is missing from {data["path"]}')
        xs, ys = [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                fail(f'{data["path"]}, line {line}: expected {len(header)} fields, found {len(row)}')
            cells = [c.strip() for c in row]
            if any(cells[col[c]] in MISSING for c in used):
                continue
            if cells[col[split["column"]]] != split.get(which, which):
                continue
            x = []
            for feat in schema["features"]:
                v = cells[col[feat["name"]]]
                if feat["type"] == "numeric":
                    num = as_number(v)
                    if num is None:
                        fail(f'{data["path"]}, line {line}, column {feat["name"]}: not a number: {v!r}')
                    x.append(num)
                else:
                    k = level_index(feat["levels"], v)
                    if k < 0:
                        fail(f'{data["path"]}, line {line}, column {feat["name"]}: unknown level {v!r}')
                    start = 1 if feat.get("dropFirst") else 0
                    x.extend(1.0 if k == j else 0.0 for j in range(start, len(feat["levels"])))
            v = cells[col[task["label"]]]
            rule = task.get("positive")
            if rule is None:
                y = as_number(v)
            elif "above" in rule:
                y = 1.0 if (as_number(v) or 0) > rule["above"] else 0.0
            else:
                y = 1.0 if v in rule["equals"] else 0.0
            if y not in (0.0, 1.0):
                fail(f'{data["path"]}, line {line}: label {v!r} is not binary')
            xs.append(x)
            ys.append(y)
    if which == "train" and len(xs) < 2:
        fail("fewer than two complete training rows")
    return schema, xs, ys


def normaliser(schema, data, xs):
    """The study's normalisation, fitted on the training rows; applied alike to the test rows."""
    pre = schema.get("preprocessing") or {"normalise": "none"}
    mode = pre["normalise"]
    if mode == "none":
        return lambda rows: rows
    d = len(xs[0])
    if mode == "global":
        stats = data.get("stats")
        if not stats:
            fail("global normalisation needs task.data.stats (the federated mean and std)")
        mean, std = stats["mean"], stats["std"]
    else:  # the site's own training statistics, unbiased std as Setu computes them
        n = len(xs)
        mean = [sum(r[j] for r in xs) / n for j in range(d)]
        std = [math.sqrt(sum((r[j] - mean[j]) ** 2 for r in xs) / (n - 1)) for j in range(d)]
    mask = []
    for feat in schema["features"]:
        width = 1 if feat["type"] == "numeric" else len(feat["levels"]) - (1 if feat.get("dropFirst") else 0)
        mask.extend([feat["type"] == "numeric" or pre.get("scope") == "all"] * width)
    eps = pre.get("epsilon", 1e-9)
    return lambda rows: [[(r[j] - mean[j]) / (std[j] + eps) if mask[j] else r[j] for j in range(d)] for r in rows]


# ---- the model ----

def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def bce(z, y):  # softplus(z) - y z, finite for any z
    return (z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))) - y * z


def mean_loss(w, b, xs, ys):
    return sum(bce(b + sum(wi * xi for wi, xi in zip(w, x)), y) for x, y in zip(xs, ys)) / len(xs)


def metrics_of(w, b, xs, ys):
    acc = sum((sigmoid(b + sum(wi * xi for wi, xi in zip(w, x))) > 0.5) == (y == 1.0) for x, y in zip(xs, ys)) / len(xs)
    return {"loss": mean_loss(w, b, xs, ys), "accuracy": acc}


def write_result(path, result):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def main():
    workdir = os.environ.get("SETU_WORKDIR") or fail("SETU_WORKDIR is not set")
    with open(os.environ.get("SETU_TASK") or os.path.join(workdir, "task.json"), encoding="utf-8") as f:
        task = json.load(f)
    if task.get("setu") != 2:
        fail(f"unknown task format version {task.get('setu')!r} (this trainer speaks version 2)")
    if task["model"]["kind"] != "logistic":
        fail(f"this trainer trains logistic regression, not {task['model']['kind']!r}")
    tensors = read_safetensors(task["paths"]["weights"])
    (wshape, w), (bshape, b) = tensors["weight"], tensors["bias"]
    w0, b0 = list(w), b[0]

    schema, xs, ys = load_rows(task["data"], "train")
    norm = normaliser(schema, task["data"], xs)
    xs = norm(xs)
    if len(xs[0]) != len(w):
        fail(f"the schema gives {len(xs[0])} features but the model has {len(w)}")
    _, xt, yt = load_rows(task["data"], "test")
    xt = norm(xt) if xt else xt
    evaluation = {"evaluate": {"numExamples": len(xt), "metrics": metrics_of(w, b0, xt, yt)}} if xt else {}
    if task["kind"] == "evaluate":
        if not xt:
            fail("no complete test rows to evaluate on")
        write_result(task["paths"]["result"], evaluation)
        return

    fit = task["fit"]
    opt = fit["optimizer"]
    if opt["kind"] != "sgd":
        fail("this example implements SGD only")
    lr, momentum, mu = opt["lr"], opt.get("momentum", 0.0), fit.get("proximalMu", 0.0)
    n, bs = len(xs), fit["batchSize"]
    steps = fit.get("localSteps") or fit["epochs"] * math.ceil(n / bs)
    rng = random.Random(task["seed"] * 100003 + task["round"])
    loss_before = mean_loss(w, b0, xs, ys)
    vel_w, vel_b = [0.0] * len(w), 0.0
    bias = b0
    order, at = [], n
    for step in range(steps):
        if at >= n:  # a fresh permutation for each pass over the data
            order = list(range(n))
            rng.shuffle(order)
            at = 0
        batch = order[at:at + bs]
        at += bs
        gw, gb = [0.0] * len(w), 0.0
        for i in batch:
            g = sigmoid(bias + sum(wi * xi for wi, xi in zip(w, xs[i]))) - ys[i]
            for j, xij in enumerate(xs[i]):
                gw[j] += g * xij
            gb += g
        gw = [g / len(batch) + mu * (wj - w0j) for g, wj, w0j in zip(gw, w, w0)]
        gb = gb / len(batch) + mu * (bias - b0)
        vel_w = [momentum * v + g for v, g in zip(vel_w, gw)]
        vel_b = momentum * vel_b + gb
        w = [wj - lr * v for wj, v in zip(w, vel_w)]
        bias -= lr * vel_b
        if (step + 1) % max(1, steps // 5) == 0:
            progress = {"step": step + 1, "of": steps, "metrics": {"loss": mean_loss(w, bias, xs, ys)}}
            print("setu:progress " + json.dumps(progress), flush=True)
    after = metrics_of(w, bias, xs, ys)

    write_safetensors(task["paths"]["output"], {"weight": (wshape, w), "bias": (bshape, [bias])})
    fit_metrics = {"loss": after["loss"], "lossBefore": loss_before, "accuracy": after["accuracy"], "steps": steps}
    write_result(task["paths"]["result"], {"fit": {"numExamples": n, "metrics": fit_metrics}, **evaluation})
    print(f"done: {steps} steps on {n} rows, loss {loss_before:.4f} -> {after['loss']:.4f}", flush=True)


if __name__ == "__main__":
    main()
