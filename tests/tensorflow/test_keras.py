"""dcomm.keras (Keras 3): DistributedOptimizer in model.fit with the four
callbacks, config round trip, and load_model."""

import os

import keras
import numpy as np
import tensorflow as tf

import dcomm.keras as hvd
import dcomm.tensorflow.keras as hvd_tf_keras


def model_and_data(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    x = np.random.default_rng(seed).normal(size=(32, 4)).astype(np.float32)
    return model, x, x.sum(1, keepdims=True)


def test_fit_keeps_ranks_in_step_and_schedules_lr():
    r, n = hvd.rank(), hvd.size()
    assert hvd_tf_keras.DistributedOptimizer is hvd.DistributedOptimizer
    model, x, y = model_and_data(seed=100 + r)          # different weights and data per rank
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.01, momentum=0.9))
    model.compile(optimizer=opt, loss="mse")
    lrs = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: lrs.append(float(model.optimizer.learning_rate.numpy())))
    hist = model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        hvd.callbacks.LearningRateWarmupCallback(initial_lr=0.01 * n, warmup_epochs=2),
        hvd.callbacks.LearningRateScheduleCallback(initial_lr=0.01 * n, multiplier=0.5,
                                                   start_epoch=2), record])
    # after the broadcast every step applies the same averaged gradient
    weights = np.concatenate([w.ravel() for w in model.get_weights()])
    gathered = hvd.allgather(tf.constant(weights[None]))
    np.testing.assert_allclose(gathered.numpy()[0], gathered.numpy()[-1], rtol=1e-5, atol=1e-6)
    losses = hvd.allgather(tf.constant([hist.history["loss"]])).numpy()
    np.testing.assert_allclose(losses[0], losses[-1], rtol=1e-6)      # averaged metrics
    np.testing.assert_allclose(lrs[1], 0.01 * n, rtol=1e-5)            # warm-up done
    np.testing.assert_allclose(lrs[2:], [0.005 * n] * 2, rtol=1e-5)    # then halved


def test_gradients_are_averaged():
    r, n = hvd.rank(), hvd.size()
    v = keras.Variable([0.0])
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(1.0))
    opt.apply_gradients([(tf.constant([float(r + 1)]), v)])
    np.testing.assert_allclose(v.numpy(), [-(n + 1) / 2.0])


def test_config_round_trip():
    opt = hvd.DistributedOptimizer(keras.optimizers.Adam(0.003))
    cfg = opt.get_config()
    assert type(opt).from_config(cfg).get_config() == cfg
    assert isinstance(opt, keras.optimizers.Adam)


def test_load_model_makes_optimizer_distributed(tmp_path):
    r = hvd.rank()
    model, x, y = model_and_data(seed=7)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(str(tmp_path), "m%d.keras" % r)
    model.save(path)
    loaded = hvd.load_model(path)
    assert type(loaded.optimizer).__name__ == "Adam"
    assert type(loaded.optimizer).__module__ == "dcomm.keras.optimizer"
    loaded.fit(x, y, epochs=1, verbose=0)       # its steps reduce over the ranks
