"""horovod.torch's collectives (names, arguments, defaults) over dcomm, for
CPU tensors. Contiguous tensors go to libdcomm by pointer; the ops that
Horovod makes differentiable are autograd Functions here too."""

import ctypes

import torch

from .. import _core, _lib
from .._core import (Adasum, Average, Max, Min, ProcessSet, Product, Sum, add_process_set,
                     cross_rank, cross_size, global_process_set, is_initialized, local_rank,
                     local_size, poll, rank, remove_process_set, size, start_timeline,
                     stop_timeline)
from .._horovod import (ccl_built, cuda_built, ddl_built, gloo_built,  # noqa: F401
                        gloo_enabled, init, is_homogeneous, mpi_built, mpi_enabled,
                        mpi_threads_supported, nccl_built, rocm_built, shutdown)
from .._lib import DcommError, UnsupportedError
from .compression import Compression

HorovodInternalError = DcommError

_TORCH_CODES = {
    torch.uint8: _lib.UINT8, torch.int8: _lib.INT8, torch.int32: _lib.INT32,
    torch.int64: _lib.INT64, torch.float16: _lib.FLOAT16, torch.bfloat16: _lib.BFLOAT16,
    torch.float32: _lib.FLOAT32, torch.float64: _lib.FLOAT64,
}
SUPPORTED_DTYPES = tuple(_TORCH_CODES)


class _TorchAdapter(_core.ArrayAdapter):
    codes = _TORCH_CODES

    @staticmethod
    def itemsize(x):
        return x.element_size()

    @staticmethod
    def contiguous(x):
        if not isinstance(x, torch.Tensor):
            raise TypeError("expected a torch.Tensor, got %s" % type(x).__name__)
        if x.device.type != "cpu":
            raise UnsupportedError(_lib.ERR_UNSUPPORTED, "tensor on %s: this dcomm has no cuda "
                                   "module; dcomm.torch takes CPU tensors" % x.device, "dcomm.torch")
        if x.is_sparse:
            raise TypeError("sparse tensors are not supported; use sparse_allreduce_async "
                            "or .to_dense()")
        if x.is_contiguous():
            return x.detach(), False
        return x.detach().contiguous(), True

    @staticmethod
    def ptr(x):
        return x.data_ptr()

    @staticmethod
    def numel(x):
        return x.numel()

    @staticmethod
    def shape(x):
        return tuple(x.shape)

    @staticmethod
    def clone(x):
        return x.detach().clone(memory_format=torch.contiguous_format)

    @staticmethod
    def empty_like(x):
        return torch.empty(x.shape, dtype=x.dtype)

    @staticmethod
    def copy_(dst, src):
        with torch.no_grad():
            dst.copy_(src)

    @staticmethod
    def narrow(x, start, length):
        return x.narrow(0, start, length).clone()

    @staticmethod
    def from_pointer(ptr, count, like, shape):
        out = torch.empty(shape, dtype=like.dtype)
        nbytes = out.numel() * out.element_size()
        if nbytes:
            ctypes.memmove(out.data_ptr(), ptr, nbytes)
        return out

    @staticmethod
    def scale_(x, factor):
        # As Horovod scales: float32 math for 16-bit floats, double for
        # integers (then toward zero), the tensor's own type otherwise.
        with torch.no_grad():
            if x.dtype in (torch.float16, torch.bfloat16):
                x.copy_((x.float() * factor).to(x.dtype))
            elif x.dtype.is_floating_point:
                x.mul_(factor)
            else:
                x.copy_((x.double() * factor).to(x.dtype))

    @staticmethod
    def trunc_div_(x, n):
        with torch.no_grad():
            x.copy_(torch.div(x, n, rounding_mode="trunc"))


_ops = _core.Collectives(_TorchAdapter())


# ---- handles ---------------------------------------------------------------------

def synchronize(handle):
    """Waits for an async op and returns its output (raises DcommError on failure)."""
    return handle.synchronize()


def _resolve_op(op, average, default=Average):
    if op is not None and average is not None:
        raise ValueError("give op or the deprecated average, not both")
    if average is not None:
        return Average if average else Sum
    return default if op is None else op


# ---- allreduce -------------------------------------------------------------------

def allreduce_async(tensor, average=None, name=None, op=None, prescale_factor=1.0,
                    postscale_factor=1.0, process_set=global_process_set):
    return _ops.allreduce_async(tensor, _resolve_op(op, average), name, process_set,
                                prescale_factor, postscale_factor)


def allreduce_async_(tensor, average=None, name=None, op=None, prescale_factor=1.0,
                     postscale_factor=1.0, process_set=global_process_set):
    return _ops.allreduce_async(tensor, _resolve_op(op, average), name, process_set,
                                prescale_factor, postscale_factor, inplace=True)


def allreduce_(tensor, average=None, name=None, op=None, prescale_factor=1.0,
               postscale_factor=1.0, process_set=global_process_set):
    return _core.blocking(lambda: allreduce_async_(tensor, average, name, op, prescale_factor,
                                                   postscale_factor, process_set))


class _Allreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, op, prescale, postscale, ps):
        ctx.args = (op, prescale, postscale, ps)
        return _core.blocking(lambda: _ops.allreduce_async(tensor, op, name, ps, prescale,
                                                           postscale))

    @staticmethod
    def backward(ctx, grad):
        op, prescale, postscale, ps = ctx.args
        return allreduce(grad, op=op, prescale_factor=prescale, postscale_factor=postscale,
                         process_set=ps), None, None, None, None, None


def allreduce(tensor, average=None, name=None, compression=Compression.none, op=None,
              prescale_factor=1.0, postscale_factor=1.0, process_set=global_process_set):
    """Reduces tensor over the set's ranks (default op Average); differentiable."""
    op = _resolve_op(op, average)
    compressed, cctx = compression.compress(tensor)
    out = _Allreduce.apply(compressed, name, op, prescale_factor, postscale_factor, process_set)
    return compression.decompress(out, cctx)


def grouped_allreduce_async(tensors, average=None, name=None, op=None, prescale_factor=1.0,
                            postscale_factor=1.0, process_set=global_process_set):
    return _ops.grouped_allreduce_async(tensors, _resolve_op(op, average), name, process_set,
                                        prescale_factor, postscale_factor)


def grouped_allreduce_async_(tensors, average=None, name=None, op=None, prescale_factor=1.0,
                             postscale_factor=1.0, process_set=global_process_set):
    return _ops.grouped_allreduce_async(tensors, _resolve_op(op, average), name, process_set,
                                        prescale_factor, postscale_factor, inplace=True)


def grouped_allreduce_(tensors, average=None, name=None, op=None, prescale_factor=1.0,
                       postscale_factor=1.0, process_set=global_process_set):
    return _core.blocking(lambda: grouped_allreduce_async_(tensors, average, name, op,
                                                           prescale_factor, postscale_factor,
                                                           process_set))


class _GroupedAllreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, op, prescale, postscale, ps, *tensors):
        ctx.args = (op, prescale, postscale, ps)
        return tuple(_core.blocking(lambda: _ops.grouped_allreduce_async(tensors, op, name, ps,
                                                                         prescale, postscale)))

    @staticmethod
    def backward(ctx, *grads):
        op, prescale, postscale, ps = ctx.args
        out = grouped_allreduce(list(grads), op=op, prescale_factor=prescale,
                                postscale_factor=postscale, process_set=ps)
        return (None,) * 5 + tuple(out)


def grouped_allreduce(tensors, average=None, name=None, compression=Compression.none, op=None,
                      prescale_factor=1.0, postscale_factor=1.0, process_set=global_process_set):
    op = _resolve_op(op, average)
    pairs = [compression.compress(t) for t in tensors]
    outs = _GroupedAllreduce.apply(name, op, prescale_factor, postscale_factor, process_set,
                                   *[p[0] for p in pairs])
    return [compression.decompress(t, c) for t, (_, c) in zip(outs, pairs)]


def sparse_allreduce_async(tensor, name, op, process_set=global_process_set):
    """A sparse tensor reduced by allgathering its indices and values; the
    returned callable (pass it to synchronize) gives the coalesced-free result."""
    t = tensor.coalesce() if not tensor.is_coalesced() else tensor
    hi = allgather_async(t._indices().t().contiguous(), name="%s.indices" % name,
                         process_set=process_set)
    hv = allgather_async(t._values(), name="%s.values" % name, process_set=process_set)

    class _Sparse:
        @staticmethod
        def synchronize():
            values = hv.synchronize()
            indices = hi.synchronize()
            if op == Average:
                values = values / process_set.size()
            return torch.sparse_coo_tensor(indices.t(), values, t.size())

        @staticmethod
        def poll():
            return hi.poll() and hv.poll()

        def __call__(self):     # Horovod's sparse handle is a callable
            return self.synchronize()
    return _Sparse()


# ---- allgather -------------------------------------------------------------------

def allgather_async(tensor, name=None, process_set=global_process_set):
    return _ops.allgather_async(tensor, name, process_set)


class _Allgather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, ps):
        out, rows = _core.blocking(lambda: _ops.allgather_async(tensor, name, ps, with_rows=True))
        me = ps.rank()
        ctx.span = (sum(rows[:me]), rows[me])
        ctx.ps = ps
        return out

    @staticmethod
    def backward(ctx, grad):
        # Horovod's convention: the output gradient averaged over the ranks,
        # this rank's rows of it.
        averaged = allreduce(grad.contiguous(), op=Average, process_set=ctx.ps)
        return averaged.narrow(0, ctx.span[0], ctx.span[1]), None, None


def allgather(tensor, name=None, process_set=global_process_set):
    """Concatenates every rank's tensor along dimension 0; differentiable."""
    if tensor.dim() == 0:
        tensor = tensor.reshape(1)
    return _Allgather.apply(tensor, name, process_set)


def _member_name(name, i):
    return None if name is None else "%s.%d" % (name, i)


def grouped_allgather_async(tensors, name=None, process_set=global_process_set):
    return _core.GroupHandle([allgather_async(t, _member_name(name, i), process_set)
                              for i, t in enumerate(tensors)])


class _GroupedAllgather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, ps, *tensors):
        outs = _core.blocking(lambda: _core.GroupHandle(
            [_ops.allgather_async(t, _member_name(name, i), ps, with_rows=True)
             for i, t in enumerate(tensors)]))
        me = ps.rank()
        ctx.spans = [(sum(rows[:me]), rows[me]) for _, rows in outs]
        ctx.ps = ps
        return tuple(out for out, _ in outs)

    @staticmethod
    def backward(ctx, *grads):
        averaged = grouped_allreduce([g.contiguous() for g in grads], op=Average,
                                     process_set=ctx.ps)
        return (None, None) + tuple(a.narrow(0, start, n)
                                    for a, (start, n) in zip(averaged, ctx.spans))


def grouped_allgather(tensors, name=None, process_set=global_process_set):
    """allgather of each tensor, as one group; differentiable like allgather."""
    tensors = [t.reshape(1) if t.dim() == 0 else t for t in tensors]
    return list(_GroupedAllgather.apply(name, process_set, *tensors))


# ---- broadcast -------------------------------------------------------------------

def broadcast_async(tensor, root_rank, name=None, process_set=global_process_set):
    return _ops.broadcast_async(tensor, root_rank, name, process_set)


def broadcast_async_(tensor, root_rank, name=None, process_set=global_process_set):
    return _ops.broadcast_async(tensor, root_rank, name, process_set, inplace=True)


def broadcast_(tensor, root_rank, name=None, process_set=global_process_set):
    return _core.blocking(lambda: broadcast_async_(tensor, root_rank, name, process_set))


class _Broadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, root_rank, name, ps):
        ctx.root, ctx.ps = root_rank, ps
        return _core.blocking(lambda: _ops.broadcast_async(tensor, root_rank, name, ps))

    @staticmethod
    def backward(ctx, grad):
        # Horovod's convention: the averaged gradient on the root, zeros elsewhere.
        averaged = allreduce(grad.contiguous(), op=Average, process_set=ctx.ps)
        if rank() != ctx.root:
            averaged = averaged * 0
        return averaged, None, None, None


def broadcast(tensor, root_rank, name=None, process_set=global_process_set):
    """tensor of global rank root_rank, on every rank of the set; differentiable."""
    return _Broadcast.apply(tensor, root_rank, name, process_set)


# ---- alltoall --------------------------------------------------------------------

def _splits_list(splits):
    if splits is None:
        return None
    if isinstance(splits, torch.Tensor):
        return [int(s) for s in splits.reshape(-1).tolist()]
    return [int(s) for s in splits]


class _AlltoallHandle:
    """Wraps an alltoall handle: synchronize() gives (output, received splits)."""

    def __init__(self, inner):
        self.inner = inner

    def poll(self):
        return self.inner.poll()

    def synchronize(self):
        out, received = self.inner.synchronize()
        return out, torch.tensor(received, dtype=torch.int32)


def alltoall_async(tensor, splits=None, name=None, process_set=global_process_set):
    return _AlltoallHandle(_ops.alltoall_async(tensor, _splits_list(splits), name, process_set))


class _Alltoall(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, splits, name, ps):
        out, received = _core.blocking(lambda: alltoall_async(tensor, splits, name, ps))
        ctx.received, ctx.ps = received, ps
        ctx.mark_non_differentiable(received)
        return out, received

    @staticmethod
    def backward(ctx, grad, _unused):
        back, _ = alltoall(grad.contiguous(), splits=ctx.received, process_set=ctx.ps)
        return back, None, None, None


def alltoall(tensor, splits=None, name=None, process_set=global_process_set):
    """Sends splits[r] rows to rank r (equal parts when None). Returns the
    received tensor, and with splits given also the received splits."""
    out, received = _Alltoall.apply(tensor, _splits_list(splits), name, process_set)
    return out if splits is None else (out, received)


# ---- reducescatter -----------------------------------------------------------------

def reducescatter_async(tensor, name=None, op=Average, process_set=global_process_set,
                        prescale_factor=1.0, postscale_factor=1.0):
    return _ops.reducescatter_async(tensor, op, name, process_set, prescale_factor,
                                    postscale_factor)


class _Reducescatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, op, ps, prescale, postscale):
        ctx.args = (op, ps, prescale * postscale)
        return _core.blocking(lambda: _ops.reducescatter_async(tensor, op, name, ps, prescale,
                                                               postscale))

    @staticmethod
    def backward(ctx, grad):
        # Horovod's convention: Sum scales the gradient by the set's size,
        # Average passes it on; then the pre/postscale factors; then allgather.
        op, ps, scale = ctx.args
        if op == Sum:
            scale *= ps.size()
        grad = grad.contiguous()
        return (allgather(grad * scale if scale != 1.0 else grad, process_set=ps),
                None, None, None, None, None)


def reducescatter(tensor, name=None, compression=Compression.none, op=Average,
                  process_set=global_process_set, prescale_factor=1.0, postscale_factor=1.0):
    """Reduces over ranks; set rank r keeps its block of rows (rows // n, the
    first rows % n ranks one more). Differentiable for Sum and Average."""
    compressed, cctx = compression.compress(tensor)
    out = _Reducescatter.apply(compressed, name, op, process_set, prescale_factor,
                               postscale_factor)
    return compression.decompress(out, cctx)


def grouped_reducescatter_async(tensors, name=None, op=Average, process_set=global_process_set,
                                prescale_factor=1.0, postscale_factor=1.0):
    return _core.GroupHandle([reducescatter_async(t, None if name is None else "%s.%d" % (name, i),
                                                  op, process_set, prescale_factor,
                                                  postscale_factor)
                              for i, t in enumerate(tensors)])


def grouped_reducescatter(tensors, name=None, compression=Compression.none, op=Average,
                          process_set=global_process_set, prescale_factor=1.0,
                          postscale_factor=1.0):
    return [reducescatter(t, None if name is None else "%s.%d" % (name, i), compression, op,
                          process_set, prescale_factor, postscale_factor)
            for i, t in enumerate(tensors)]


# ---- barrier and join ------------------------------------------------------------

def barrier(process_set=global_process_set):
    _core.barrier(process_set)


def join(device=-1):
    """This rank has run out of data: until every rank has joined, it
    contributes zeros to the others' allreduces. Returns the rank that joined
    last. device: accepted for Horovod compatibility (CPU only)."""
    return _core.join(global_process_set)
