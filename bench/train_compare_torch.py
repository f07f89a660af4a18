#!/usr/bin/python3
"""The PyTorch side of bench/train_compare.sh: dtrain's CNN (conv 5x5x32 + ReLU +
max-pool 2, conv 5x5x64 + ReLU + max-pool 2, dense 1024 + ReLU + dropout 0.4,
dense 10), SGD with momentum 0.9 and weight decay, on Fashion-MNIST batches,
timed over a fixed number of steps after 3 warm-up steps."""
import argparse
import gzip
import os
import re
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_idx(path, dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != 0x800 | dims:
        sys.exit(f"{path}: bad IDX magic 0x{magic:08x}")
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.fc2 = nn.Linear(1024, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), 0.4, self.training)
        return self.fc2(x)


def blas_line():
    for line in torch.__config__.show().splitlines():
        if "BLAS_INFO" in line:
            m = re.search(r"BLAS_INFO=([^,]*)", line)
            return "BLAS_INFO=" + (m.group(1) if m else "?")
    return "BLAS_INFO not reported"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    images = load_idx(os.path.join(a.data_dir, "train-images-idx3-ubyte.gz"), 3)
    labels = load_idx(os.path.join(a.data_dir, "train-labels-idx1-ubyte.gz"), 1)
    x_all = torch.from_numpy(((images.astype(np.float32) / 255.0 - 0.2860) / 0.3530)[:, None])
    y_all = torch.from_numpy(labels.astype(np.int64))
    model = Net()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    perm = torch.randperm(x_all.shape[0])
    warm = 3
    t0 = c0 = None
    for step in range(warm + a.steps):
        if step == warm:
            t0 = time.perf_counter()
            c0 = time.process_time()
        idx = perm[(step * a.batch_size) % (x_all.shape[0] - a.batch_size):][:a.batch_size]
        x, y = x_all[idx], y_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    debian = "/usr/lib/python3" in torch.__file__
    if debian:  # BLAS_INFO=generic: whatever libblas.so.3 the alternatives system selects
        sysblas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
        blas = " -> system libblas.so.3 is " + ("OpenBLAS" if "openblas" in sysblas else "reference BLAS")
    else:
        blas = " (bundled with the wheel)"
    print(f"torch {torch.__version__} ({'Debian python3-torch' if debian else 'PyPI wheel at ' + os.path.dirname(torch.__file__)}), "
          f"{blas_line()}{blas}, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    print(f"torch: bench: {a.steps} steps x {a.batch_size} images in {dt:.3f} s: "
          f"{a.steps * a.batch_size / dt:.1f} images/s (1 rank, {a.threads} thread{'s' if a.threads > 1 else ''}, "
          f"batch {a.batch_size}), last loss {loss.item():.4f}; "
          f"{a.steps * a.batch_size / cpu:.1f} images per CPU second")


if __name__ == "__main__":
    main()
