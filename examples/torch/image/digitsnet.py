"""The model of kiln's torch-digits example, shared by trainer.py and server.py.

A small CNN for small grayscale images (the 8x8 digits of scikit-learn's dataset by
default): two 3x3 convolutions, one 2x2 max-pool, two dense layers. Images of any size
and mode are converted to gray and resized to the model's size, in training and serving
alike, by the one function load_image.
"""

import io
import json
import os

import torch
from torch import nn
from PIL import Image

MODEL_FILE = "model.pt"
META_FILE = "classes.json"


class DigitsNet(nn.Module):
    def __init__(self, classes, size):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * (size // 2) * (size // 2), 64), nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(64, classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


def load_image(src, size):
    """A 1 x size x size float tensor in [0, 1] from a path or the bytes of a PNG/JPEG."""
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    with Image.open(src) as im:
        im = im.convert("L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return data.reshape(1, size, size).float().div(255.0)


def cpu_threads():
    """The CPUs this process may use: its affinity, capped by the cgroup's CPU quota."""
    n = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def save(model_dir, net, classes, size):
    os.makedirs(model_dir, exist_ok=True)
    torch.save(net.state_dict(), os.path.join(model_dir, MODEL_FILE))
    meta = {"classes": classes, "image_size": size, "channels": 1, "arch": "DigitsNet",
            "torch": torch.__version__}
    with open(os.path.join(model_dir, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


def load(model_dir, device="cpu"):
    """(net in eval mode, classes, image size) from a model folder save wrote."""
    with open(os.path.join(model_dir, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    classes, size = meta["classes"], int(meta["image_size"])
    net = DigitsNet(len(classes), size)
    path = os.path.join(model_dir, MODEL_FILE)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        state = torch.load(path, map_location=device)
    net.load_state_dict(state)
    return net.to(device).eval(), classes, size
