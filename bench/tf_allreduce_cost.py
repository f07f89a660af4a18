"""What dcomm.tensorflow adds to an allreduce: per-call time of the same
allreduce through the NumPy binding (dcomm.allreduce, the bare ctypes call),
dcomm.tensorflow eagerly, and dcomm.tensorflow inside a tf.function (a
tf.numpy_function), at a small and a large size. Run under dlaunch:

    DCOMM_LIBRARY=build/libdcomm.so PYTHONPATH=plugins/python \\
        build/launcher/dlaunch -np 2 .venv-tf/bin/python bench/tf_allreduce_cost.py
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import dcomm  # noqa: E402
import dcomm.tensorflow as hvd  # noqa: E402


def per_call(fn, reps):
    for _ in range(5):
        fn()
    hvd.barrier()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def main():
    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for count in (1024, 1 << 20):
        a = np.ones(count, np.float32)
        t = tf.ones([count], tf.float32)
        graph = tf.function(lambda x: hvd.allreduce(x, op=hvd.Sum))
        n = reps if count < 65536 else max(reps // 10, 5)
        rows = [("numpy dcomm.allreduce", per_call(lambda: dcomm.allreduce(a), n)),
                ("dcomm.tensorflow eager", per_call(lambda: hvd.allreduce(t, op=hvd.Sum), n)),
                ("dcomm.tensorflow tf.function", per_call(lambda: graph(t), n))]
        if hvd.rank() == 0:
            base = rows[0][1]
            for what, s in rows:
                print("%8d floats  %-30s %8.1f us  (+%.1f us)" % (count, what, s * 1e6,
                                                                  (s - base) * 1e6))


if __name__ == "__main__":
    main()
