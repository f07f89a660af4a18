"""dcomm.torch: horovod.torch's API over dcomm, for CPU tensors.

    import dcomm.torch as hvd      # in place of: import horovod.torch as hvd
    hvd.init()
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)

Run with `dlaunch -np 4 python3 train.py`. See the README's table for what of
horovod.torch is supported; Adasum is not. Elastic training: dcomm.torch.elastic (hvd.elastic).

Importing it also registers the torch.distributed backend "dcomm":

    import dcomm.torch
    torch.distributed.init_process_group("dcomm")     # under dlaunch or torchrun
    model = torch.nn.parallel.DistributedDataParallel(model)
"""
import torch.distributed as _dist

from .compression import Compression
from .functions import (allgather_object, broadcast_object, broadcast_optimizer_state,
                        broadcast_parameters)
from .mpi_ops import (Adasum, Average, DcommError, HorovodInternalError, Max, Min, ProcessSet,
                      Product, Sum, SUPPORTED_DTYPES, UnsupportedError, add_process_set,
                      allgather, allgather_async, allreduce, allreduce_, allreduce_async,
                      allreduce_async_, alltoall, alltoall_async, barrier, broadcast, broadcast_,
                      broadcast_async, broadcast_async_, ccl_built, cross_rank, cross_size,
                      cuda_built, ddl_built, global_process_set, gloo_built, gloo_enabled,
                      grouped_allgather, grouped_allgather_async, grouped_allreduce,
                      grouped_allreduce_, grouped_allreduce_async, grouped_allreduce_async_,
                      grouped_reducescatter, grouped_reducescatter_async, init, is_homogeneous,
                      is_initialized, join, local_rank, local_size, mpi_built, mpi_enabled,
                      mpi_threads_supported, nccl_built, poll, rank, reducescatter,
                      reducescatter_async, remove_process_set, rocm_built, shutdown, size,
                      sparse_allreduce_async, start_timeline, stop_timeline, synchronize)
from .optimizer import DistributedOptimizer
from . import elastic
from .sync_batch_norm import SyncBatchNorm

if _dist.is_available():
    from .process_group import ProcessGroupDcomm, new_group
    from .process_group import register as _register_backend
    _register_backend()
