"""Gradient compression for allreduce, as horovod.torch.Compression."""

import torch

from .._compression import Compressor, HalfCompressor, NoneCompressor  # noqa: F401


class FP16Compressor(HalfCompressor):
    """Sends floating tensors as float16; other dtypes unchanged."""
    half = torch.float16

    @staticmethod
    def is_floating(tensor):
        return tensor.dtype.is_floating_point

    @staticmethod
    def cast(tensor, dtype):
        return tensor.type(dtype)


class Compression:
    none = NoneCompressor
    fp16 = FP16Compressor
