"""Horovod-style data-parallel training of a small CNN on Fashion-MNIST with
dcomm.torch. Each rank trains on its shard; DistributedOptimizer averages the
gradients; rank 0 prints the test accuracy averaged over all ranks' shards.

    dlaunch -np 2 python3 plugins/python/examples/fashion_mnist.py
    (from a build tree: DCOMM_LIBRARY=build/libdcomm.so PYTHONPATH=plugins/python ...)

Data: the IDX files of Debian's dataset-fashion-mnist (/usr/share/datasets/
fashion-mnist), or --data-dir. Changing the import below to horovod.torch is
all it takes to run the same script on Horovod.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import dcomm.torch as hvd
from fashion_mnist_idx import DEFAULT_DATA, read_idx


def load(data_dir, kind, limit):
    prefix = "train" if kind == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % prefix))
    labels = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % prefix))
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - 0.2860) / 0.3530          # Fashion-MNIST's mean and std
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=5)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


def metric_average(value, name):
    return hvd.allreduce(torch.tensor(float(value)), name=name).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--lr", type=float, default=0.01, help="scaled by the number of ranks")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--fp16-allreduce", action="store_true")
    parser.add_argument("--train-limit", type=int, default=0, help="use the first N images")
    parser.add_argument("--test-limit", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="exit 1 when the test accuracy is below this")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    hvd.init()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // hvd.local_size()))
    if not os.path.isdir(args.data_dir):
        if hvd.rank() == 0:
            print("no Fashion-MNIST in %s: apt-get install dataset-fashion-mnist, or --data-dir"
                  % args.data_dir)
        sys.exit(77)

    train = load(args.data_dir, "train", args.train_limit)
    test = load(args.data_dir, "test", args.test_limit)
    train_sampler = DistributedSampler(train, num_replicas=hvd.size(), rank=hvd.rank(),
                                       shuffle=True, seed=args.seed)
    test_sampler = DistributedSampler(test, num_replicas=hvd.size(), rank=hvd.rank(),
                                      shuffle=False)
    train_loader = DataLoader(train, batch_size=args.batch_size, sampler=train_sampler)
    test_loader = DataLoader(test, batch_size=1000, sampler=test_sampler)

    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr * hvd.size(),
                                momentum=args.momentum)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                         compression=compression, op=hvd.Average)

    for epoch in range(1, args.epochs + 1):
        model.train()
        train_sampler.set_epoch(epoch)
        start = time.time()
        for batch, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if batch % 100 == 0 and hvd.rank() == 0:
                print("epoch %d [%5d/%5d] loss %.4f" % (epoch, batch * len(data),
                                                       len(train_sampler), loss.item()))
        train_time = time.time() - start

        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for data, target in test_loader:
                output = model(data)
                loss_sum += F.nll_loss(output, target, reduction="sum").item()
                correct += output.argmax(1).eq(target).sum().item()
        n = len(test_sampler)
        test_loss = metric_average(loss_sum / n, "avg_loss")
        accuracy = metric_average(correct / n, "avg_accuracy")
        if hvd.rank() == 0:
            print("epoch %d: test loss %.4f, accuracy %.2f%% (%d ranks, %.1f s training)"
                  % (epoch, test_loss, 100.0 * accuracy, hvd.size(), train_time))
    hvd.shutdown()
    if accuracy < args.min_accuracy:
        print("accuracy %.4f is below --min-accuracy %.4f" % (accuracy, args.min_accuracy))
        sys.exit(1)


if __name__ == "__main__":
    main()
