"""dcomm.keras: horovod.keras's API for Keras 3 (on TensorFlow) over dcomm.

    import dcomm.keras as hvd           # or: import dcomm.tensorflow.keras as hvd
    hvd.init()
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.Adam(1e-3 * hvd.size())), ...)
    model.fit(x, y, callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                               hvd.callbacks.MetricAverageCallback()])
"""

from ..tensorflow import (Adasum, Average, Compression, Max, Min, ProcessSet,  # noqa: F401
                          Product, Sum, add_process_set, allgather, allgather_object,
                          broadcast, broadcast_object, ccl_built, cross_rank, cross_size,
                          cuda_built, ddl_built, global_process_set, gloo_built, gloo_enabled,
                          init, is_homogeneous, is_initialized, join, local_rank, local_size,
                          mpi_built, mpi_enabled, mpi_threads_supported, nccl_built, rank,
                          remove_process_set, rocm_built, shutdown, size, start_timeline,
                          stop_timeline)
from ..tensorflow import allreduce as _tf_allreduce
from ..tensorflow.functions import broadcast_variables
from . import callbacks  # noqa: F401
from .optimizer import DistributedOptimizer, PartialDistributedOptimizer, load_model  # noqa: F401


def allreduce(value, name=None, average=None, prescale_factor=1.0, postscale_factor=1.0,
              op=None, compression=Compression.none):
    """Reduces a tensor or array over the ranks (default: average)."""
    return _tf_allreduce(value, average=average, name=name, op=op,
                         prescale_factor=prescale_factor, postscale_factor=postscale_factor,
                         compression=compression)


def broadcast_global_variables(root_rank, model=None):
    """Broadcasts model's variables (and its optimizer's) from root_rank."""
    if model is None:
        raise ValueError("Keras 3 has no global variables; pass the model")
    broadcast_variables(model.variables, root_rank)
    if model.optimizer is not None:
        broadcast_variables(model.optimizer.variables, root_rank)
