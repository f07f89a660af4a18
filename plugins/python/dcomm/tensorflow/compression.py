"""Gradient compression for allreduce, as horovod.tensorflow.Compression."""

import tensorflow as tf

from .._compression import Compressor, HalfCompressor, NoneCompressor  # noqa: F401


class FP16Compressor(HalfCompressor):
    """Sends floating tensors as float16; other dtypes unchanged."""
    half = tf.float16

    @staticmethod
    def is_floating(tensor):
        return tensor.dtype.is_floating

    @staticmethod
    def cast(tensor, dtype):
        return tf.cast(tensor, dtype)


class Compression:
    none = NoneCompressor
    fp16 = FP16Compressor
