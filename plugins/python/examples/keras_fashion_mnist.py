"""Horovod-style data-parallel training of dtrain's CNN (the model of
TensorFlow's layers tutorial) on Fashion-MNIST with Keras 3 and dcomm.keras.
Each rank trains on its shard of every epoch's shuffle; DistributedOptimizer
averages the gradients; the callbacks broadcast rank 0's initial weights, warm
the learning rate up, decay it, and average the metrics; rank 0 prints the
test accuracy over the whole test set (each rank evaluates its shard, the
counts are summed).

    dlaunch -np 2 python3 plugins/python/examples/keras_fashion_mnist.py --epochs 5
    (from a build tree: DCOMM_LIBRARY=build/libdcomm.so PYTHONPATH=plugins/python,
    with TensorFlow's environment: .venv-tf/bin/python, see bench/tf_venv.sh)

--bench N times N steps after 5 warm-up steps and prints images/s (all ranks).
Threads: each rank runs TensorFlow's ops on --threads threads (default 1).
Changing the import below to horovod.tensorflow.keras is all it takes to run
the same script on Horovod (with Keras 2).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from fashion_mnist_idx import DEFAULT_DATA, read_idx  # noqa: E402


def load(data_dir, kind, limit):
    prefix = "train" if kind == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % prefix))
    labels = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % prefix))
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = (images.astype(np.float32) / 255.0 - 0.2860) / 0.3530   # Fashion-MNIST's mean, std
    return x[..., None], labels.astype(np.int64)


def build_model(keras):
    """dtrain's model: conv 5x5x32, pool, conv 5x5x64, pool, dense 1024,
    dropout 0.4, dense 10 (3.3 M parameters)."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(1024, activation="relu"), L.Dropout(0.4), L.Dense(10),
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--lr", type=float, default=0.02, help="SGD lr for one rank; x ranks")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="first N training images")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per rank")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bench", type=int, default=0, metavar="STEPS")
    args = parser.parse_args()

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(2, args.threads))
    import keras

    import dcomm.keras as hvd
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    if not os.path.isdir(args.data_dir):
        sys.exit("no Fashion-MNIST at %s (apt-get install dataset-fashion-mnist, or "
                 "--data-dir)" % args.data_dir)
    keras.utils.set_random_seed(args.seed + rank)
    x_train, y_train = load(args.data_dir, "train", args.limit)
    x_test, y_test = load(args.data_dir, "test", 0)

    model = build_model(keras)
    lr = args.lr * size
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(lr, momentum=args.momentum))
    model.compile(optimizer=opt, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    # every rank takes its slice of the same shuffle each epoch
    steps = len(x_train) // (args.batch_size * size)

    def shard(epoch):
        order = np.random.default_rng(args.seed + epoch).permutation(len(x_train))
        mine = order[rank::size][:steps * args.batch_size]
        return x_train[mine], y_train[mine]

    if args.bench:
        x, y = shard(0)
        warm = 5
        need = (warm + args.bench) * args.batch_size
        x, y = np.resize(x, (need,) + x.shape[1:]), np.resize(y, need)
        model.train_on_batch(x[:args.batch_size], y[:args.batch_size])
        for i in range(1, warm):
            model.train_on_batch(x[i * args.batch_size:(i + 1) * args.batch_size],
                                 y[i * args.batch_size:(i + 1) * args.batch_size])
        hvd.join()
        start = time.perf_counter()
        for i in range(warm, warm + args.bench):
            model.train_on_batch(x[i * args.batch_size:(i + 1) * args.batch_size],
                                 y[i * args.batch_size:(i + 1) * args.batch_size])
        hvd.join()
        took = time.perf_counter() - start
        if rank == 0:
            print("bench: np=%d, %d steps of %d images per rank, %d TF thread(s) per rank: "
                  "%.0f images/s" % (size, args.bench, args.batch_size, args.threads,
                                     args.bench * args.batch_size * size / took))
        return

    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        hvd.callbacks.LearningRateWarmupCallback(initial_lr=lr, warmup_epochs=args.warmup_epochs,
                                                 steps_per_epoch=steps),
        hvd.callbacks.LearningRateScheduleCallback(initial_lr=lr, multiplier=0.1,
                                                   start_epoch=max(args.epochs - 1, 1)),
    ]
    start = time.perf_counter()
    for epoch in range(args.epochs):
        x, y = shard(epoch)
        t0 = time.perf_counter()
        hist = model.fit(x, y, batch_size=args.batch_size, epochs=epoch + 1,
                         initial_epoch=epoch, callbacks=callbacks, shuffle=False,
                         verbose=0)
        took = time.perf_counter() - t0
        if rank == 0:
            print("epoch %d/%d: loss %.4f acc %.4f lr %.4g, %.0f images/s" % (
                epoch + 1, args.epochs, hist.history["loss"][-1],
                hist.history["accuracy"][-1], hist.history["lr"][-1],
                steps * args.batch_size * size / took), flush=True)
    logits = model.predict(x_test[rank::size], batch_size=500, verbose=0)
    right = np.array([np.sum(np.argmax(logits, 1) == y_test[rank::size])], dtype=np.int64)
    right = int(hvd.allreduce(right, op=hvd.Sum).numpy()[0])
    if rank == 0:
        print("test accuracy %.4f (%d ranks, %d epochs, %.0f s)" % (
            right / len(y_test), size, args.epochs, time.perf_counter() - start))


if __name__ == "__main__":
    main()
