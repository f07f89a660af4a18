"""dcomm for Python: collectives over libdcomm's C ABI for NumPy arrays.

    import numpy as np, dcomm
    dcomm.init()
    total = dcomm.allreduce(np.arange(4.0), op=dcomm.Sum, name="x")
    h = dcomm.allgather_async(np.ones((2, 3)), name="rows")
    rows = dcomm.synchronize(h)

Contiguous arrays are handed to libdcomm by pointer (no copy); others are
copied to a contiguous buffer first. Every error of the C library raises
DcommError (a RuntimeError) carrying dcomm_last_error(). PyTorch users want
dcomm.torch, which follows horovod.torch's API.
"""

import ctypes

import numpy as np

from . import _core, _lib
from ._core import (Adasum, Average, GroupHandle, Handle, Max, Min, ProcessSet, Product,
                    ReduceOp, Sum, add_process_set, cross_rank, cross_size, global_process_set,
                    is_initialized, local_rank, local_size, poll, rank, remove_process_set,
                    size, start_timeline, stop_timeline, synchronize)
from ._lib import DcommError, UnsupportedError, version
from ._version import __version__

_NP_CODES = {
    np.dtype(np.uint8): _lib.UINT8, np.dtype(np.int8): _lib.INT8,
    np.dtype(np.int32): _lib.INT32, np.dtype(np.int64): _lib.INT64,
    np.dtype(np.float16): _lib.FLOAT16, np.dtype(np.float32): _lib.FLOAT32,
    np.dtype(np.float64): _lib.FLOAT64,
}
# NumPy has no bfloat16; every other dtype of the ABI is here.
SUPPORTED_DTYPES = tuple(_NP_CODES)


class _NumpyAdapter(_core.ArrayAdapter):
    codes = _NP_CODES

    @staticmethod
    def itemsize(x):
        return x.dtype.itemsize

    @staticmethod
    def contiguous(x):
        if x.flags.c_contiguous and x.flags.writeable:
            return x, False
        return np.array(x, order="C", copy=True), True    # keeps a 0-d array 0-d

    @staticmethod
    def ptr(x):
        return x.ctypes.data

    @staticmethod
    def numel(x):
        return x.size

    @staticmethod
    def shape(x):
        return tuple(x.shape)

    @staticmethod
    def clone(x):
        return x.copy()

    @staticmethod
    def empty_like(x):
        return np.empty_like(x)

    @staticmethod
    def copy_(dst, src):
        np.copyto(dst, src)

    @staticmethod
    def narrow(x, start, length):
        return x[start:start + length].copy()

    @staticmethod
    def from_pointer(ptr, count, like, shape):
        out = np.empty(shape, dtype=like.dtype)
        if out.nbytes:
            ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
        return out

    @staticmethod
    def scale_(x, factor):
        np.multiply(x, factor, out=x, casting="unsafe")

    @staticmethod
    def trunc_div_(x, n):
        # C's division: toward zero, exact for every integer width
        q = x // n
        q += ((x % n) != 0) & (x < 0)
        np.copyto(x, q)


_ops = _core.Collectives(_NumpyAdapter())


def _array(x):
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    return x


def init(process_sets=None):
    """Joins the job (collective). process_sets: ProcessSets to register."""
    _core.init()
    for ps in process_sets or ():
        add_process_set(ps)


def shutdown():
    _core.shutdown()


def allreduce_async(array, op=Sum, name=None, process_set=global_process_set,
                    prescale_factor=1.0, postscale_factor=1.0):
    """Starts a reduction of array over the set's ranks; synchronize() gives a new array."""
    return _ops.allreduce_async(_array(array), op, name, process_set, prescale_factor,
                                postscale_factor)


def allreduce(array, op=Sum, name=None, process_set=global_process_set,
              prescale_factor=1.0, postscale_factor=1.0):
    return _core.blocking(lambda: allreduce_async(array, op, name, process_set,
                                                  prescale_factor, postscale_factor))


def allreduce_async_(array, op=Sum, name=None, process_set=global_process_set,
                     prescale_factor=1.0, postscale_factor=1.0):
    """In place: array holds the result after synchronize()."""
    return _ops.allreduce_async(array, op, name, process_set, prescale_factor,
                                postscale_factor, inplace=True)


def allreduce_(array, op=Sum, name=None, process_set=global_process_set,
               prescale_factor=1.0, postscale_factor=1.0):
    return _core.blocking(lambda: allreduce_async_(array, op, name, process_set,
                                                   prescale_factor, postscale_factor))


def grouped_allreduce_async(arrays, op=Sum, name=None, process_set=global_process_set,
                            prescale_factor=1.0, postscale_factor=1.0):
    return _ops.grouped_allreduce_async([_array(a) for a in arrays], op, name, process_set,
                                        prescale_factor, postscale_factor)


def grouped_allreduce(arrays, op=Sum, name=None, process_set=global_process_set,
                      prescale_factor=1.0, postscale_factor=1.0):
    return _core.blocking(lambda: grouped_allreduce_async(arrays, op, name, process_set,
                                                          prescale_factor, postscale_factor))


def allgather_async(array, name=None, process_set=global_process_set):
    """Concatenation along the first dimension of every rank's array (first
    dimensions may differ); a 0-d array counts as one row."""
    return _ops.allgather_async(_array(array), name, process_set)


def allgather(array, name=None, process_set=global_process_set):
    return _core.blocking(lambda: allgather_async(array, name, process_set))


def broadcast_async(array, root_rank, name=None, process_set=global_process_set):
    """root_rank is a global rank (a member of process_set)."""
    return _ops.broadcast_async(_array(array), root_rank, name, process_set)


def broadcast(array, root_rank, name=None, process_set=global_process_set):
    return _core.blocking(lambda: broadcast_async(array, root_rank, name, process_set))


def broadcast_async_(array, root_rank, name=None, process_set=global_process_set):
    return _ops.broadcast_async(array, root_rank, name, process_set, inplace=True)


def broadcast_(array, root_rank, name=None, process_set=global_process_set):
    return _core.blocking(lambda: broadcast_async_(array, root_rank, name, process_set))


def alltoall_async(array, splits=None, name=None, process_set=global_process_set):
    """Sends splits[r] rows (first dimension) to set rank r, in order; equal
    splits when None. synchronize() gives (received array, received splits)."""
    return _ops.alltoall_async(_array(array), splits, name, process_set)


def alltoall(array, splits=None, name=None, process_set=global_process_set):
    out, received = _core.blocking(lambda: alltoall_async(array, splits, name, process_set))
    return out, np.asarray(received, dtype=np.int64)


def reducescatter_async(array, op=Sum, name=None, process_set=global_process_set,
                        prescale_factor=1.0, postscale_factor=1.0):
    """Reduces over ranks and gives set rank r its block of rows: rows // n,
    the first rows % n ranks one more."""
    return _ops.reducescatter_async(_array(array), op, name, process_set, prescale_factor,
                                    postscale_factor)


def reducescatter(array, op=Sum, name=None, process_set=global_process_set,
                  prescale_factor=1.0, postscale_factor=1.0):
    return _core.blocking(lambda: reducescatter_async(array, op, name, process_set,
                                                      prescale_factor, postscale_factor))


def barrier(process_set=global_process_set):
    _core.barrier(process_set)


def join(process_set=global_process_set):
    """This rank has no more data: until every rank has joined it contributes
    zeros to the others' allreduces. Returns the rank that joined last."""
    return _core.join(process_set)


__all__ = [
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "allreduce", "allreduce_async", "allreduce_",
    "allreduce_async_", "grouped_allreduce", "grouped_allreduce_async", "allgather",
    "allgather_async", "broadcast", "broadcast_async", "broadcast_", "broadcast_async_",
    "alltoall", "alltoall_async", "reducescatter", "reducescatter_async", "barrier", "join",
    "poll", "synchronize", "ProcessSet", "global_process_set", "add_process_set",
    "remove_process_set", "ReduceOp", "Sum", "Average", "Min", "Max", "Product", "Adasum",
    "DcommError", "UnsupportedError", "Handle", "GroupHandle", "start_timeline",
    "stop_timeline", "version", "SUPPORTED_DTYPES",
]
