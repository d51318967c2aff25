#!/usr/bin/env python3
"""A minimal kiln trainer that needs nothing but Python's standard library.

kilnd runs `<image> train` with SageMaker's layout (docs/container-contract.md):

  /opt/ml/input/config/hyperparameters.json   every value a string
  /opt/ml/input/data/train/*.csv              the train parts of the window (read-only):
                                              a header line, then rows; label column included
  /opt/ml/model/                              write the model here; kilnd stores and serves it
  /opt/ml/output/metrics.json                 numbers worth keeping beside kilnd's own
  /opt/ml/output/failure                      on failure: why, in a line; then exit non-zero

The model is a nearest-centroid classifier on standardized numeric features: small enough to
read in a minute, good enough to pass a gate on clean tabular data. Hyperparameters: label (the
label column; default the header's last).

Run locally: python3 trainer.py train --ml-root /tmp/ml
"""

import argparse
import csv
import glob
import json
import math
import os
import signal
import sys


class Failure(Exception):
    """A reason for /opt/ml/output/failure."""


def read_rows(channel, label):
    """Read every CSV under the channel: (features, rows of floats, labels)."""
    files = sorted(glob.glob(os.path.join(channel, "**", "*.csv"), recursive=True))
    if not files:
        raise Failure("no CSV files in the train channel %s" % channel)
    features, xs, ys = None, [], []
    for path in files:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                continue
            if label is None:
                label = header[-1]
            if label not in header:
                raise Failure("%s: no label column %r in the header" % (os.path.basename(path), label))
            li = header.index(label)
            cols = [c for i, c in enumerate(header) if i != li]
            if features is None:
                features = cols
            elif cols != features:
                raise Failure("%s: columns differ from the first file's" % os.path.basename(path))
            for n, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise Failure("%s line %d: %d values, want %d" % (os.path.basename(path), n, len(row), len(header)))
                try:
                    xs.append([float(v) for i, v in enumerate(row) if i != li])
                except ValueError as e:
                    raise Failure("%s line %d: %s" % (os.path.basename(path), n, e))
                ys.append(row[li])
    if not xs:
        raise Failure("the train channel has no rows")
    return label, features, xs, ys


def fit(xs, ys):
    """Per-feature mean and spread, and each class's centroid in standardized units."""
    n, k = len(xs), len(xs[0])
    mean = [sum(x[j] for x in xs) / n for j in range(k)]
    std = [math.sqrt(sum((x[j] - mean[j]) ** 2 for x in xs) / n) or 1.0 for j in range(k)]
    sums, counts = {}, {}
    for x, y in zip(xs, ys):
        z = [(x[j] - mean[j]) / std[j] for j in range(k)]
        acc = sums.setdefault(y, [0.0] * k)
        for j in range(k):
            acc[j] += z[j]
        counts[y] = counts.get(y, 0) + 1
    centroids = {y: [v / counts[y] for v in s] for y, s in sums.items()}
    return {"mean": mean, "std": std, "centroids": centroids}


def predict(model, x):
    """The class whose centroid is nearest; the server uses the same function."""
    z = [(v - m) / s for v, m, s in zip(x, model["mean"], model["std"])]
    return min(sorted(model["centroids"]),
               key=lambda y: sum((a - b) ** 2 for a, b in zip(z, model["centroids"][y])))


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def train(root):
    hp_file = os.path.join(root, "input", "config", "hyperparameters.json")
    hp = {}
    if os.path.exists(hp_file):
        with open(hp_file, encoding="utf-8") as f:
            hp = json.load(f)
    label, features, xs, ys = read_rows(os.path.join(root, "input", "data", "train"), hp.get("label"))
    model = fit(xs, ys)
    model.update({"label": label, "features": features})
    correct = sum(predict(model, x) == y for x, y in zip(xs, ys))
    write_json(os.path.join(root, "model", "model.json"), model)
    write_json(os.path.join(root, "output", "metrics.json"),
               {"train_accuracy": correct / len(xs), "train_rows": len(xs), "classes": len(model["centroids"])})
    print("trained on %d rows, %d features, %d classes; train accuracy %.4f"
          % (len(xs), len(features), len(model["centroids"]), correct / len(xs)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--ml-root", default="/opt/ml", help="root of the SageMaker layout (for local runs)")
    args = parser.parse_args()

    # As PID 1 in a container, a signal without a handler is ignored: say why we stop instead.
    def stop(signum, frame):
        raise Failure("stopped by signal %d" % signum)
    signal.signal(signal.SIGTERM, stop)

    try:
        train(args.ml_root)
    except (Failure, OSError, json.JSONDecodeError) as e:
        print("train: %s" % e, file=sys.stderr)
        os.makedirs(os.path.join(args.ml_root, "output"), exist_ok=True)
        with open(os.path.join(args.ml_root, "output", "failure"), "w", encoding="utf-8") as f:
            f.write("%s\n" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
