"""SyncBatchNormalization: Keras BatchNormalization whose training-time
batch statistics are those of the whole set of ranks' batch."""

import keras
import tensorflow as tf

from .mpi_ops import Sum, _allreduce, global_process_set


class SyncBatchNormalization(keras.layers.BatchNormalization):
    """Mean and variance over every rank's batch (each rank's sums and counts
    allreduced, so ranks may hold different batch sizes); otherwise Keras's
    BatchNormalization. process_set: the ranks to synchronise over."""

    def __init__(self, *args, process_set=global_process_set, **kwargs):
        if kwargs.pop("fused", None):
            raise ValueError("SyncBatchNormalization does not support fused=True.")
        super().__init__(*args, **kwargs)
        self._process_set = process_set

    def _moments(self, inputs, mask):
        if mask is not None:
            return super()._moments(inputs, mask)
        x = tf.cast(inputs, tf.float32) if inputs.dtype in (tf.float16, tf.bfloat16) else inputs
        axes = list(self._reduction_axes)
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
        local = tf.concat([tf.reshape(count, [1]), tf.reduce_sum(x, axes),
                           tf.reduce_sum(tf.square(x), axes)], 0)
        total = _allreduce(local, op=Sum, process_set=self._process_set)
        channels = tf.shape(local)[0] // 2
        n = total[0]
        mean = total[1:1 + channels] / n
        variance = tf.maximum(total[1 + channels:] / n - tf.square(mean), 0)
        return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)
