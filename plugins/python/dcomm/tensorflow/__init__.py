"""dcomm.tensorflow: horovod.tensorflow's API over dcomm, for TensorFlow 2
on CPU, with no compiled op (see mpi_ops.py for how ops run).

    import dcomm.tensorflow as hvd      # in place of: import horovod.tensorflow as hvd
    hvd.init()
    tape = hvd.DistributedGradientTape(tape)
    hvd.broadcast_variables(model.variables, root_rank=0)

Run with `dlaunch -np 4 python3 train.py`. Keras users want dcomm.keras (or
dcomm.tensorflow.keras). Adasum and elastic training are not supported.
"""

import tensorflow as tf

from .compression import Compression
from .functions import allgather_object, broadcast_object, broadcast_object_fn, broadcast_variables
from .mpi_ops import (Adasum, Average, DcommError, HorovodInternalError, Max, Min,  # noqa: F401
                      ProcessSet, Product, Sum, UnsupportedError, _allreduce, _executing_eagerly,
                      _grouped_allreduce, _grouped_reducescatter, _reducescatter,
                      add_process_set, allgather, alltoall, barrier, broadcast, broadcast_,
                      ccl_built, check_num_rank_power_of_2, cross_rank, cross_size, cuda_built,
                      ddl_built, global_process_set, gloo_built, gloo_enabled, grouped_allgather,
                      handle_average_backwards_compatibility, init, is_homogeneous,
                      is_initialized, join, local_rank, local_rank_op, local_size,
                      local_size_op, mpi_built, mpi_enabled, mpi_threads_supported, nccl_built,
                      process_set_included_op, rank, rank_op, remove_process_set, rocm_built,
                      shutdown, size, size_op, start_timeline, stop_timeline)
from .gradients import (DistributedGradientTape, DistributedOptimizer,  # noqa: F401
                        PartialDistributedGradientTape)
from .sync_batch_norm import SyncBatchNormalization  # noqa: F401


def _check_sparse_op(op, prescale_factor, postscale_factor):
    if op == Adasum:
        raise NotImplementedError("Adasum does not support sparse tensors (and dcomm has no "
                                  "Adasum); pass sparse_as_dense=True")
    if op not in (Sum, Average):
        raise NotImplementedError("Only Sum and Average ops are supported with tf.IndexedSlices")
    if prescale_factor != 1.0 or postscale_factor != 1.0:
        raise NotImplementedError("Pre/postscale_factor are not supported with tf.IndexedSlices")


def _sparse_allreduce(slices, op, name, process_set, ignore_name_scope):
    """An IndexedSlices reduced as Horovod does: every rank's values and
    indices gathered (duplicate indices add up when densified)."""
    values, indices = grouped_allgather([slices.values, slices.indices],
                                        name=None if name is None else name + ".sparse",
                                        ignore_name_scope=ignore_name_scope,
                                        process_set=process_set)
    if op == Average:
        values = values / tf.cast(process_set.size(), values.dtype)
    return tf.IndexedSlices(values, indices, dense_shape=slices.dense_shape)


def allreduce(tensor, average=None, device_dense='', device_sparse='',
              compression=Compression.none, op=None, prescale_factor=1.0,
              postscale_factor=1.0, name=None, process_set=global_process_set,
              ignore_name_scope=False):
    """Reduces a tf.Tensor, tf.Variable or tf.IndexedSlices over the set's
    ranks (default op Average); differentiable. device_*: accepted, CPU only."""
    op = handle_average_backwards_compatibility(op, average)
    if isinstance(tensor, tf.IndexedSlices):
        _check_sparse_op(op, prescale_factor, postscale_factor)
        return _sparse_allreduce(tensor, op, name, process_set, ignore_name_scope)
    compressed, ctx = compression.compress(tf.convert_to_tensor(tensor))
    out = _allreduce(compressed, name=name, op=op, prescale_factor=prescale_factor,
                     postscale_factor=postscale_factor, ignore_name_scope=ignore_name_scope,
                     process_set=process_set)
    return compression.decompress(out, ctx)


def grouped_allreduce(tensors, average=None, device_dense='', device_sparse='',
                      compression=Compression.none, op=None, prescale_factor=1.0,
                      postscale_factor=1.0, process_set=global_process_set, name=None,
                      ignore_name_scope=False):
    """allreduce of a list of tensors (dense ones as one group)."""
    op = handle_average_backwards_compatibility(op, average)
    tensors = list(tensors)
    if not tensors:
        return []
    sparse = [i for i, t in enumerate(tensors) if isinstance(t, tf.IndexedSlices)]
    if sparse:
        _check_sparse_op(op, prescale_factor, postscale_factor)
    out = list(tensors)
    for i in sparse:
        out[i] = _sparse_allreduce(tensors[i], op, None if name is None else "%s.%d" % (name, i),
                                   process_set, ignore_name_scope)
    dense = [i for i in range(len(tensors)) if i not in sparse]
    if dense:
        packed = [compression.compress(tf.convert_to_tensor(tensors[i])) for i in dense]
        reduced = _grouped_allreduce([c for c, _ in packed], name=name, op=op,
                                     prescale_factor=prescale_factor,
                                     postscale_factor=postscale_factor,
                                     ignore_name_scope=ignore_name_scope,
                                     process_set=process_set)
        for i, r, (_, ctx) in zip(dense, reduced, packed):
            out[i] = compression.decompress(r, ctx)
    return out


def reducescatter(tensor, device_dense='', compression=Compression.none, op=Average,
                  name=None, process_set=global_process_set, ignore_name_scope=False,
                  prescale_factor=1.0, postscale_factor=1.0):
    """Reduces over the set's ranks and gives each its block of rows of the
    first dimension (rows // n, the first rows % n ranks one more)."""
    if op not in (Sum, Average):
        raise NotImplementedError("reducescatter supports the Sum and Average ops")
    compressed, ctx = compression.compress(tf.convert_to_tensor(tensor))
    out = _reducescatter(compressed, name=name, op=op, ignore_name_scope=ignore_name_scope,
                         process_set=process_set, prescale_factor=prescale_factor,
                         postscale_factor=postscale_factor)
    return compression.decompress(out, ctx)


def grouped_reducescatter(tensors, device_dense='', compression=Compression.none, op=Average,
                          name=None, process_set=global_process_set, ignore_name_scope=False,
                          prescale_factor=1.0, postscale_factor=1.0):
    if op not in (Sum, Average):
        raise NotImplementedError("reducescatter supports the Sum and Average ops")
    packed = [compression.compress(tf.convert_to_tensor(t)) for t in tensors]
    out = _grouped_reducescatter([c for c, _ in packed], name=name, op=op,
                                 ignore_name_scope=ignore_name_scope, process_set=process_set,
                                 prescale_factor=prescale_factor,
                                 postscale_factor=postscale_factor)
    return [compression.decompress(o, ctx) for o, (_, ctx) in zip(out, packed)]


def broadcast_global_variables(root_rank):
    """TF1 graphs: the op that broadcasts every global variable from root_rank."""
    if tf.executing_eagerly():
        raise RuntimeError("hvd.broadcast_global_variables() does not support eager execution; "
                           "use hvd.broadcast_variables(model.variables, root_rank)")
    return broadcast_variables(tf.compat.v1.global_variables(), root_rank)


def BroadcastGlobalVariablesHook(*args, **kwargs):
    raise NotImplementedError("tf.estimator is gone from TensorFlow 2.16+; broadcast with "
                              "hvd.broadcast_variables")
