"""horovod.tensorflow's helpers: broadcast of variables and of picklable
objects, allgather of objects."""

import io

import cloudpickle
import numpy as np
import tensorflow as tf

from .mpi_ops import _ops, broadcast, global_process_set, rank


def broadcast_variables(variables, root_rank, process_set=global_process_set, inplace=False):
    """Makes every rank's variables root_rank's (inplace: accepted; the
    values are always assigned). In a graph, returns the op that does it."""
    variables = list(variables)
    assigns = [v.assign(broadcast(v, root_rank, name="broadcast_variables.%d" % i
                                  if tf.executing_eagerly() else None,
                                  process_set=process_set))
               for i, v in enumerate(variables)]
    return None if tf.executing_eagerly() else tf.group(*assigns)


def _pickled(obj):
    buf = io.BytesIO()
    cloudpickle.dump(obj, buf)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8).copy()


def _unpickled(array):
    return cloudpickle.load(io.BytesIO(np.asarray(array, dtype=np.uint8).tobytes()))


def broadcast_object(obj, root_rank=0, session=None, name=None,
                     process_set=global_process_set):
    """obj of root_rank (pickled with cloudpickle), returned on every rank.
    Runs at once, in eager mode and graph mode alike (session is not needed)."""
    name = name or type(obj).__name__
    payload = _pickled(obj) if rank() == root_rank else np.zeros(0, np.uint8)
    length = np.array([payload.size], dtype=np.int64)
    length = _ops.broadcast_async(length, root_rank, name + ".sz", process_set).synchronize()
    if rank() != root_rank:
        payload = np.zeros(int(length[0]), dtype=np.uint8)
    payload = _ops.broadcast_async(payload, root_rank, name + ".t", process_set).synchronize()
    return obj if rank() == root_rank else _unpickled(payload)


def broadcast_object_fn(root_rank=0, session=None, name=None, process_set=global_process_set):
    """A function obj -> root_rank's obj (Horovod builds it for TF1 sessions)."""
    name = name or "broadcast_object_fn"
    return lambda obj: broadcast_object(obj, root_rank, session, name, process_set)


def allgather_object(obj, session=None, name=None, process_set=global_process_set):
    """List of every set rank's obj, in rank order."""
    name = name or type(obj).__name__
    gathered, rows = _ops.allgather_async(_pickled(obj), name + ".allgather_object",
                                          process_set, with_rows=True).synchronize()
    out, start = [], 0
    for n in rows:
        out.append(_unpickled(gathered[start:start + n]))
        start += n
    return out
