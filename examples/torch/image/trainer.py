#!/usr/bin/env python3
"""kiln's torch-digits trainer: a small CNN on images in torchvision's ImageFolder layout.

kilnd runs `<image> train` with the SageMaker layout (docs/container-contract.md):

  /opt/ml/input/data/train/<label>/<file>.png|.jpg       the training images (read-only)
  /opt/ml/input/data/validation/<label>/<file>           the holdout, when kilnd gives one
  /opt/ml/input/config/hyperparameters.json              epochs, batch_size, lr, seed, image_size, threads
  /opt/ml/model/                                         model.pt (state dict) + classes.json
  /opt/ml/output/metrics.json                            numbers only; kilnd records them
  /opt/ml/output/failure                                 why, when training fails (exit 1)

It trains on the GPU when torch sees one (a site's CUDA build of PyTorch), else on the CPU
with one thread (more with the "threads" hyperparameter, up to the container's CPU quota). Nothing is downloaded; HOME and
the caches are under /tmp, so it runs on a read-only root filesystem.

Run locally: python3 trainer.py train --ml-root /tmp/ml
"""

import argparse
import json
import os
import sys
import time
import traceback

DEFAULTS = {"epochs": "15", "batch_size": "64", "lr": "0.003", "seed": "1", "image_size": "8", "threads": "0"}


def read_hyperparameters(ml):
    path = os.path.join(ml, "input", "config", "hyperparameters.json")
    hp = dict(DEFAULTS)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            hp.update({k: str(v) for k, v in json.load(f).items()})
    try:
        return {"epochs": int(hp["epochs"]), "batch_size": int(hp["batch_size"]), "lr": float(hp["lr"]),
                "seed": int(hp["seed"]), "image_size": int(hp["image_size"]), "threads": int(hp["threads"])}
    except ValueError as e:
        raise ValueError("hyperparameters.json: %s" % e) from None


def load_folder(root, size, classes=None):
    """(images N x 1 x size x size, label indexes N, classes) of an ImageFolder tree. With
    classes given (the validation channel), a label the model does not know is -1."""
    import torch
    from torchvision.datasets import ImageFolder
    from digitsnet import load_image

    if not os.path.isdir(root) or not any(os.scandir(root)):
        raise ValueError("no images under %s: want <label>/<file>.png folders" % root)
    try:
        ds = ImageFolder(root, loader=lambda p: load_image(p, size))
    except FileNotFoundError as e:  # a class folder with no image in it
        raise ValueError("%s: %s" % (root, e)) from None
    known = classes if classes is not None else ds.classes
    index = {c: i for i, c in enumerate(known)}
    xs, ys = [], []
    for path, target in ds.samples:
        try:
            xs.append(ds.loader(path))
        except Exception as e:
            raise ValueError("%s: not a decodable image: %s" % (os.path.relpath(path, root), e)) from None
        ys.append(index.get(ds.classes[target], -1))
    return torch.stack(xs), torch.tensor(ys), known


def accuracy(net, x, y, device):
    import torch
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x[i:i + 512].to(device)).argmax(1).cpu() for i in range(0, len(x), 512)])
    net.train()
    return float((pred == y).float().mean())


def train(ml):
    import torch
    from torch import nn
    import digitsnet

    hp = read_hyperparameters(ml)
    torch.manual_seed(hp["seed"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # One thread by default: a model this small gains little from more, and OpenMP workers
    # that spin for a core another process holds cost far more (15 epochs on 1,438 digits
    # on a busy 2-core box: 5 s with one thread, 99 s with two). The "threads"
    # hyperparameter asks for more, up to the container's CPUs.
    threads = min(hp["threads"] or 1, digitsnet.cpu_threads())
    torch.set_num_threads(threads)
    data = os.path.join(ml, "input", "data")
    size = hp["image_size"]
    x, y, classes = load_folder(os.path.join(data, "train"), size)
    if len(classes) < 2:
        raise ValueError("only one class (%s) under %s: a classifier needs two" % (classes[0], data + "/train"))
    print("training on %d images of %d classes (%s), device %s, %d CPU threads"
          % (len(x), len(classes), " ".join(classes), device, threads), flush=True)

    start = time.monotonic()
    net = digitsnet.DigitsNet(len(classes), size).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=hp["lr"])
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(hp["seed"])
    xd, yd = x.to(device), y.to(device)
    for epoch in range(hp["epochs"]):
        order = torch.randperm(len(x), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(x), hp["batch_size"]):
            idx = order[i:i + hp["batch_size"]]
            opt.zero_grad()
            loss = loss_fn(net(xd[idx]), yd[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        if epoch % 10 == 9 or epoch == hp["epochs"] - 1:
            print("epoch %d loss %.4f" % (epoch + 1, total / len(x)), flush=True)
    seconds = time.monotonic() - start

    metrics = {"train_images": len(x), "classes": len(classes), "epochs": hp["epochs"],
               "train_seconds": round(seconds, 3), "cuda": int(device == "cuda"),
               "train_accuracy": accuracy(net, x, y, device)}
    val = os.path.join(data, "validation")
    if os.path.isdir(val) and any(os.scandir(val)):
        vx, vy, _ = load_folder(val, size, classes)
        metrics["validation_images"] = len(vx)
        metrics["validation_accuracy"] = accuracy(net, vx, vy, device)
    digitsnet.save(os.path.join(ml, "model"), net.cpu(), classes, size)
    out = os.path.join(ml, "output")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f)
        f.write("\n")
    print("trained in %.1fs: %s" % (seconds, json.dumps(metrics)), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--ml-root", default="/opt/ml")
    args = parser.parse_args()
    try:
        train(args.ml_root)
    except Exception as e:
        traceback.print_exc()
        out = os.path.join(args.ml_root, "output")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "failure"), "w", encoding="utf-8") as f:
            msg = str(e) or type(e).__name__
            f.write(msg.splitlines()[0][:1000] + "\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
