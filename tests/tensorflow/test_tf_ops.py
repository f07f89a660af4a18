"""dcomm.tensorflow's ops in eager mode and inside tf.function, with their
gradients (Horovod's), against values computed here from every rank's input."""

import numpy as np
import pytest
import tensorflow as tf

import dcomm.tensorflow as hvd


def ranks():
    return hvd.rank(), hvd.size()


def both_modes(fn):
    """fn run eagerly and as a tf.function; both results."""
    return fn(), tf.function(fn)()


def test_allreduce_ops_and_dtypes():
    r, n = ranks()
    every = [np.arange(6, dtype=np.float64).reshape(2, 3) + 10 * k for k in range(n)]
    for dtype in (tf.float32, tf.float64, tf.float16, tf.bfloat16, tf.int32, tf.int16, tf.uint8):
        x = tf.cast(every[r], dtype)
        for op, ref in ((hvd.Sum, np.sum), (hvd.Min, np.min), (hvd.Max, np.max)):
            for got in both_modes(lambda: hvd.allreduce(x, op=op)):
                assert got.dtype == dtype and got.shape == (2, 3)
                want = ref(np.stack(every), axis=0)
                if dtype == tf.uint8:
                    want = want.astype(np.uint8)   # wraps, as Horovod's does
                np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), want, rtol=1e-2)
    avg = hvd.allreduce(tf.constant(every[r]))          # default op: Average
    np.testing.assert_allclose(avg.numpy(), np.mean(every, axis=0))


def test_scale_factors_and_compression():
    r, n = ranks()
    x = tf.fill([4], float(r + 1))
    total = n * (n + 1) / 2
    got = hvd.allreduce(x, op=hvd.Sum, prescale_factor=0.5, postscale_factor=3.0)
    np.testing.assert_allclose(got.numpy(), [1.5 * total] * 4)
    half = hvd.allreduce(x, op=hvd.Sum, compression=hvd.Compression.fp16)
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), [total] * 4)


def test_allreduce_gradient_is_allreduce():
    r, n = ranks()
    v = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(hvd.allreduce(v * (r + 1), op=hvd.Sum))
    # d/dv: allreduce(ones) * (r + 1)
    np.testing.assert_allclose(tape.gradient(y, v).numpy(), [n * (r + 1)] * 2)


def test_indexed_slices():
    r, n = ranks()
    s = tf.IndexedSlices(tf.fill([1, 2], float(r + 1)), tf.constant([r]), tf.constant([n, 2]))
    out = hvd.allreduce(s, op=hvd.Sum)
    assert isinstance(out, tf.IndexedSlices)
    dense = tf.convert_to_tensor(out).numpy()
    np.testing.assert_allclose(dense, [[k + 1.0] * 2 for k in range(n)])
    with pytest.raises(NotImplementedError):
        hvd.allreduce(s, op=hvd.Max)


def test_allgather_broadcast_alltoall_reducescatter():
    r, n = ranks()
    x = tf.fill([r + 1, 2], r)
    for got in both_modes(lambda: hvd.allgather(x)):
        np.testing.assert_array_equal(got.numpy(), np.concatenate(
            [np.full([k + 1, 2], k) for k in range(n)]))
    for got in both_modes(lambda: hvd.broadcast(tf.constant([r, r]), root_rank=n - 1)):
        np.testing.assert_array_equal(got.numpy(), [n - 1, n - 1])
    # rank r sends k + 1 rows of value r to rank k
    send = tf.concat([tf.fill([k + 1], r) for k in range(n)], 0)
    splits = [k + 1 for k in range(n)]
    for out, received in both_modes(lambda: hvd.alltoall(send, splits=splits)):
        np.testing.assert_array_equal(out.numpy(), np.repeat(np.arange(n), r + 1))
        np.testing.assert_array_equal(received.numpy(), [r + 1] * n)
    rows = tf.reshape(tf.range(2 * n * 3, dtype=tf.float32), [2 * n, 3])
    for got in both_modes(lambda: hvd.reducescatter(rows, op=hvd.Sum)):
        np.testing.assert_allclose(got.numpy(), n * rows.numpy()[2 * r:2 * r + 2])


def test_gradients_of_gather_broadcast():
    r, n = ranks()
    v = tf.Variable(tf.ones([r + 1, 2]))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(hvd.allgather(v) * 2.0)
    np.testing.assert_allclose(tape.gradient(y, v).numpy(), np.full([r + 1, 2], 2.0))
    w = tf.Variable([1.0, 1.0])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(hvd.broadcast(w, root_rank=0) * 3.0)
    np.testing.assert_allclose(tape.gradient(y, w).numpy(), [3.0 if r == 0 else 0.0] * 2)


def test_distributed_gradient_tape_and_local_sources():
    r, n = ranks()
    shared, local = tf.Variable([1.0]), tf.Variable([1.0])
    with tf.GradientTape() as tape:
        loss = (r + 1.0) * tf.reduce_sum(shared + local)
    tape = hvd.DistributedGradientTape(tape)
    tape.register_local_source(local)
    g_shared, g_local = tape.gradient(loss, [shared, local])
    np.testing.assert_allclose(g_shared.numpy(), [(n + 1) / 2.0])    # the mean of r + 1
    np.testing.assert_allclose(g_local.numpy(), [(r + 1.0) / n])     # own, scaled by 1/size


def test_objects_variables_join():
    r, n = ranks()
    assert hvd.broadcast_object({"rank": r}, root_rank=0) == {"rank": 0}
    assert hvd.allgather_object(("r", r)) == [("r", k) for k in range(n)]
    v = tf.Variable([float(r)] * 3)
    hvd.broadcast_variables([v], root_rank=0)
    np.testing.assert_array_equal(v.numpy(), [0.0] * 3)
    assert 0 <= int(hvd.join()) < n


def test_process_set_allreduce():
    r, n = ranks()
    ps = hvd.add_process_set([0, 1])
    try:
        if r in (0, 1):
            got = hvd.allreduce(tf.constant([float(r)]), op=hvd.Sum, process_set=ps)
            np.testing.assert_allclose(got.numpy(), [1.0])
    finally:
        hvd.remove_process_set(ps)


def test_sync_batch_norm_uses_every_rank():
    r, n = ranks()
    everyone = np.arange(4 * n * 3, dtype=np.float32).reshape(4 * n, 3) ** 1.5
    layer = hvd.SyncBatchNormalization(momentum=0.0, epsilon=1e-5)
    out = layer(everyone[4 * r:4 * r + 4], training=True)
    mean, var = everyone.mean(0), everyone.var(0)
    want = (everyone[4 * r:4 * r + 4] - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-3, atol=1e-3)
