"""horovod.tensorflow's collectives over dcomm, for CPU tensors, with no
compiled op: in eager mode a tensor's NumPy view goes to the framework-neutral
core (dcomm/_core.py through the NumPy adapter); inside tf.function and TF1
graphs the same code runs in a tf.numpy_function whose output shapes are set
as far as they are known. Gradients are those Horovod registers for its ops
(allreduce: allreduce; allgather: averaged, then this rank's rows; broadcast:
averaged, zero off the root; alltoall: alltoall back; reducescatter: allgather),
given through tf.custom_gradient.

Ops in a graph are named after their input tensor (as Horovod names them), so
ranks match them by name; in eager mode they match in submission order unless
named. A numpy_function holds one of TF's inter-op threads while it waits, so
collectives that TF ran concurrently in different orders on different ranks
could take every thread and deadlock: in tf.function TensorFlow already runs
stateful ops in program order; in TF1 graphs each collective gets a control
dependency on the one built before it (the same order on every rank)."""

import contextlib
import re
import weakref

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record
from tensorflow.python.framework.func_graph import FuncGraph

import dcomm as _np_dcomm
from .. import _core, _lib
from .._horovod import (ccl_built, cuda_built, ddl_built, gloo_built,  # noqa: F401
                        gloo_enabled, init, is_homogeneous, mpi_built, mpi_enabled,
                        mpi_threads_supported, nccl_built, rocm_built, shutdown)
from .._core import (Adasum, Average, Max, Min, ProcessSet, Product, Sum,  # noqa: F401
                     add_process_set, cross_rank, cross_size, global_process_set,
                     is_initialized, local_rank, local_size, rank, remove_process_set, size,
                     start_timeline, stop_timeline)
from .._lib import DcommError, UnsupportedError

HorovodInternalError = DcommError
_ops = _np_dcomm._ops          # the core over NumPy arrays

# Reductions of dtypes the C ABI lacks run in a wider type of the same kind
# and are cast back: exact for Sum/Min/Max/Product of integers (the low bits
# of a wrapped sum or product do not depend on the width), rounded once for
# bfloat16. Data movement of any dtype travels as bytes.
_WIDER = {np.dtype(np.int16): np.int32, np.dtype(np.uint16): np.int32,
          np.dtype(np.uint32): np.int64, np.dtype(np.uint64): np.int64}
try:
    import ml_dtypes
    _WIDER[np.dtype(ml_dtypes.bfloat16)] = np.float32
except ImportError:  # TensorFlow brings ml_dtypes; without it bfloat16 is not reduced
    pass


def _executing_eagerly():
    return tf.executing_eagerly()


def handle_average_backwards_compatibility(op, average):
    if op is not None and average is not None:
        raise ValueError("The op parameter supersedes average. Please provide only one of them.")
    if average is not None:
        return Average if average else Sum
    return Average if op is None else op


def check_num_rank_power_of_2(num_rank):
    return num_rank != 0 and (num_rank & (num_rank - 1)) == 0


def _normalize_name(name):
    return re.sub("[^a-zA-Z0-9_]", "_", name)


def _op_name(prefix, tensor, name, ignore_name_scope=False):
    """The name ranks match an op by: the given one (under the graph's name
    scope unless ignore_name_scope), else in a graph the input tensor's."""
    if tf.executing_eagerly():
        return name
    if name is None:
        try:
            return "%s_%s" % (prefix, _normalize_name(tensor.name))
        except AttributeError:      # an eager tensor captured by a tf.function
            return None             # (ordered there: program order is kept)
    if ignore_name_scope:
        return name
    scope = tf.compat.v1.get_default_graph().get_name_scope()
    return "%s/%s" % (scope, name) if scope else name


# ---- running NumPy work as a TF op ----------------------------------------------

_last_in_graph = weakref.WeakKeyDictionary()    # TF1 graph -> its latest collective op


def _in_order(graph):
    if isinstance(graph, FuncGraph):
        return contextlib.nullcontext()       # auto control dependencies order them
    last = _last_in_graph.get(graph)
    return tf.control_dependencies([last] if last is not None else [])


_MISMATCH = -3      # DCOMM_ERR_MISMATCH


def _as_tf_errors(fn):
    """fn raising TF's error classes where Horovod's ops do (eager mode):
    ranks that disagree on a tensor -> FailedPreconditionError, a bad
    argument -> InvalidArgumentError. In a graph a tf.numpy_function turns a
    ValueError into InvalidArgumentError and anything else into UnknownError,
    whatever the class raised, so there a mismatch is an UnknownError."""
    def call(*args):
        try:
            return fn(*args)
        except DcommError as exc:
            if exc.status == _MISMATCH:
                raise tf.errors.FailedPreconditionError(None, None, str(exc)) from exc
            raise
        except (ValueError, TypeError) as exc:
            raise tf.errors.InvalidArgumentError(None, None, str(exc)) from exc
    return call


def _run(fn, inputs, out_dtypes, out_shapes, name):
    """fn(*numpy inputs) -> tuple of numpy outputs, as TF tensors of
    out_dtypes; eagerly, or as a stateful tf.numpy_function in a graph."""
    if tf.executing_eagerly():
        outs = _as_tf_errors(fn)(*[np.asarray(x) for x in inputs])
        return [tf.constant(o) if o.dtype == d.as_numpy_dtype else tf.constant(o, dtype=d)
                for o, d in zip(outs, out_dtypes)]
    graph = tf.compat.v1.get_default_graph()
    with _in_order(graph):
        outs = tf.numpy_function(lambda *xs: tuple(fn(*xs)), list(inputs), list(out_dtypes),
                                 stateful=True, name=_normalize_name(name) if name else None)
    if not isinstance(graph, FuncGraph):
        _last_in_graph[graph] = outs[0].op
    for o, s in zip(outs, out_shapes):
        o.set_shape(s)
    return list(outs)


def _reduce_np(x, reduce_async, *args):
    """reduce_async(array, *args) on x, through a wider dtype when the ABI lacks x's."""
    wide = _WIDER.get(x.dtype)
    if wide is None:
        return reduce_async(x, *args)
    h = reduce_async(x.astype(wide), *args)
    return _core.GroupHandle([h], lambda outs: outs[0].astype(x.dtype))


def _scaled(x, factor):
    """x * factor computed as Horovod's kernels do on the CPU (float16 and
    bfloat16 in float32, integers in float64, truncated back)."""
    if factor == 1.0:
        return x
    if x.dtype.kind in "iu":
        wide = np.float64
    elif x.dtype.itemsize < 4:
        wide = np.float32
    else:
        wide = x.dtype.type
    return (x.astype(wide) * wide(factor)).astype(x.dtype)


def _contig(x):
    """x as a C-contiguous array of the same shape (np.ascontiguousarray
    would make a 0-d array 1-d)."""
    x = np.asarray(x)
    return x if x.flags.c_contiguous else x.copy(order="C")


def _member(name, i, n):
    return None if name is None else "%s.%d" % (name, i) if n > 1 else name


def _np_reduce(reduce_async, xs, op, name, ps, prescale, postscale):
    """reduce_async (the core's allreduce or reducescatter) of each of xs, all
    submitted before any is waited for; scaling done here (see _scaled)."""
    handles = [_reduce_np(_contig(_scaled(x, prescale)), reduce_async, op,
                          _member(name, i, len(xs)), ps) for i, x in enumerate(xs)]
    return [_scaled(h.synchronize(), postscale) for h in handles]


def _np_allreduce(xs, op, name, ps, prescale, postscale):
    return _np_reduce(_ops.allreduce_async, xs, op, name, ps, prescale, postscale)


def _differentiable(forward, backward, xs):
    """forward(*xs) -> list of output tensors, with backward(xs, outs, *dys)
    -> the inputs' gradients. Eagerly with no tape recording, the
    bookkeeping of tf.custom_gradient (a large part of a small op's cost)
    is skipped."""
    if tf.executing_eagerly() and not record.could_possibly_record():
        return forward(*xs)

    @tf.custom_gradient
    def op(*args):
        outs = forward(*args)
        return outs, lambda *dys: backward(args, outs, *dys)
    return op(*xs)


def _tensor(t):
    return t if isinstance(t, (tf.Tensor, tf.IndexedSlices)) else tf.convert_to_tensor(t)


# ---- allreduce -------------------------------------------------------------------

def _grouped_allreduce(tensors, name=None, op=Sum, prescale_factor=1.0, postscale_factor=1.0,
                       ignore_name_scope=False, process_set=global_process_set):
    """Dense allreduce of a list of tensors as one op; differentiable (the
    gradient is the same allreduce of the gradients)."""
    tensors = [_tensor(t) for t in tensors]
    if not tensors:
        return []
    _core._as_op(op)
    opname = _op_name("HorovodAllreduce", tensors[0], name, ignore_name_scope)

    def forward(*xs):
        return _run(lambda *a: _np_allreduce(a, op, opname, process_set, prescale_factor,
                                              postscale_factor),
                    xs, [x.dtype for x in xs], [x.shape for x in xs], opname)

    def backward(_xs, _outs, *dys):
        return _grouped_allreduce(list(dys), op=op, prescale_factor=prescale_factor,
                                  postscale_factor=postscale_factor, process_set=process_set)
    return list(_differentiable(forward, backward, tensors))


def _allreduce(tensor, name=None, op=Sum, prescale_factor=1.0, postscale_factor=1.0,
               ignore_name_scope=False, process_set=global_process_set):
    return _grouped_allreduce([tensor], name, op, prescale_factor, postscale_factor,
                              ignore_name_scope, process_set)[0]


# ---- allgather -------------------------------------------------------------------

def _rows_shape(shapes):
    """Static output shape of a gather: first dimension unknown."""
    return [tf.TensorShape([None]).concatenate(s[1:]) if s.rank else tf.TensorShape([None])
            for s in shapes]


def _np_allgather(xs, name, ps):
    """[(gathered, rows per rank)] for each array of xs, all submitted first."""
    handles = [_ops.allgather_async(_contig(x), _member(name, i, len(xs)), ps,
                                    with_rows=True) for i, x in enumerate(xs)]
    return [h.synchronize() for h in handles]


def grouped_allgather(tensors, name=None, ignore_name_scope=False,
                      process_set=global_process_set):
    """Concatenation along the first dimension of every rank's tensors, for a
    list of tensors at once; differentiable."""
    tensors = [_tensor(t) for t in tensors]
    if not tensors:
        return []
    opname = _op_name("HorovodAllgather", tensors[0], name, ignore_name_scope)

    def forward(*xs):
        return _run(lambda *a: [g for g, _ in _np_allgather(a, opname, process_set)],
                    xs, [x.dtype for x in xs], _rows_shape([x.shape for x in xs]), opname)

    def backward(xs, _outs, *dys):
        reduced = _grouped_allreduce(list(dys), op=Average, process_set=process_set)
        # each rank's row count, to cut out this rank's rows
        counts = grouped_allgather([tf.reshape(tf.shape(x, out_type=tf.int64)[0], [1])
                                    for x in xs], process_set=process_set)
        me = process_set.rank()
        return [tf.split(g, tf.reshape(c, [-1]), axis=0, num=process_set.size())[me]
                for g, c in zip(reduced, counts)]
    return list(_differentiable(forward, backward, tensors))


def allgather(tensor, name=None, ignore_name_scope=False, process_set=global_process_set):
    return grouped_allgather([tensor], name, ignore_name_scope, process_set)[0]


# ---- broadcast -------------------------------------------------------------------

def broadcast(tensor, root_rank, name=None, ignore_name_scope=False,
              process_set=global_process_set):
    """root_rank's tensor on every rank of the set; differentiable."""
    tensor = _tensor(tensor)
    opname = _op_name("HorovodBroadcast", tensor, name, ignore_name_scope)
    root = int(root_rank)

    def forward(x):
        return _run(lambda a: [_ops.broadcast_async(_contig(a), root, opname,
                                                    process_set).synchronize()],
                    [x], [x.dtype], [x.shape], opname)

    def backward(_xs, _outs, dy):
        reduced = _allreduce(dy, op=Average, process_set=process_set)
        return reduced if rank() == root else reduced * 0
    return _differentiable(forward, backward, [tensor])[0]


def broadcast_(variables, root_rank, name=None, process_set=global_process_set):
    """Broadcasts variables in place from root_rank; returns their new values."""
    variables = list(variables)
    values = [broadcast(v, root_rank, None if name is None else "%s.%d" % (name, i),
                        process_set=process_set) for i, v in enumerate(variables)]
    if tf.executing_eagerly():
        for v, x in zip(variables, values):
            v.assign(x)
        return [v.read_value() for v in variables]
    assigns = [v.assign(x) for v, x in zip(variables, values)]
    with tf.control_dependencies(assigns):
        return [tf.identity(x) for x in values]


# ---- alltoall --------------------------------------------------------------------

def alltoall(tensor, splits=None, name=None, ignore_name_scope=False,
             process_set=global_process_set):
    """Sends splits[r] rows to set rank r (equal splits when None); returns
    the received rows, and with splits given also the received splits."""
    tensor = _tensor(tensor)
    opname = _op_name("HorovodAlltoall", tensor, name, ignore_name_scope)
    has_splits = splits is not None
    splits_t = tf.cast(tf.convert_to_tensor(splits if has_splits else [], dtype=None
                                            if has_splits else tf.int32), tf.int32)

    def np_fn(a, s):
        if a.ndim == 0:
            raise ValueError("alltoall %r: a scalar cannot be split; it needs at least one "
                             "dimension" % (opname,))
        out, received = _ops.alltoall_async(_contig(a),
                                            list(s) if s.size else None, opname,
                                            process_set).synchronize()
        return out, np.asarray(received, dtype=np.int32)

    def forward(x, s):
        return _run(np_fn, [x, s], [x.dtype, tf.int32],
                    [_rows_shape([x.shape])[0], [process_set.size()]], opname)

    def backward(_xs, outs, dy, _dreceived):
        back, _ = alltoall(dy, splits=outs[1], process_set=process_set)
        return back, None
    out, received = _differentiable(forward, backward, [tensor, splits_t])
    return (out, received) if has_splits else out


# ---- reducescatter ---------------------------------------------------------------

def _np_reducescatter(xs, op, name, ps, prescale, postscale):
    for x in xs:
        if x.ndim == 0:
            raise ValueError("reducescatter %r: a scalar cannot be scattered; it needs at "
                             "least one dimension" % (name,))
    return _np_reduce(_ops.reducescatter_async, xs, op, name, ps, prescale, postscale)


def _grouped_reducescatter(tensors, name=None, op=Sum, ignore_name_scope=False,
                           process_set=global_process_set, prescale_factor=1.0,
                           postscale_factor=1.0):
    tensors = [_tensor(t) for t in tensors]
    if not tensors:
        return []
    _core._as_op(op)
    for t in tensors:
        if t.shape.rank == 0:
            raise ValueError("reducescatter: a scalar cannot be scattered")
    opname = _op_name("HorovodReducescatter", tensors[0], name, ignore_name_scope)

    def forward(*xs):
        return _run(lambda *a: _np_reducescatter(a, op, opname, process_set, prescale_factor,
                                                  postscale_factor),
                    xs, [x.dtype for x in xs], _rows_shape([x.shape for x in xs]), opname)

    def backward(_xs, _outs, *dys):
        scale = (process_set.size() if op == Sum else 1) * prescale_factor * postscale_factor
        dys = [dy * tf.cast(scale, dy.dtype) if scale != 1 else dy for dy in dys]
        return grouped_allgather(dys, process_set=process_set)
    return list(_differentiable(forward, backward, tensors))


def _reducescatter(tensor, name=None, op=Sum, ignore_name_scope=False,
                   process_set=global_process_set, prescale_factor=1.0, postscale_factor=1.0):
    return _grouped_reducescatter([tensor], name, op, ignore_name_scope, process_set,
                                  prescale_factor, postscale_factor)[0]


# ---- join, barrier, identity ops -------------------------------------------------

def join(process_set=global_process_set):
    """This rank has no more data; returns (as a tensor) the rank that joined last."""
    return _run(lambda: [np.asarray(_core.join(process_set), dtype=np.int32)], [], [tf.int32],
                [[]], "HorovodJoin")[0]


def barrier(process_set=global_process_set):
    _core.barrier(process_set)


def _const_op(value, name):
    with tf.name_scope(name or "dcomm"):
        return tf.constant(value, dtype=tf.int32)


def size_op(process_set_id=0, name=None):
    return _const_op(_lib.lib.dcomm_comm_size(int(process_set_id)), name)


def process_set_included_op(process_set_id=0, name=None):
    return _const_op(int(_lib.lib.dcomm_comm_rank(int(process_set_id)) >= 0), name)


def local_size_op(name=None):
    return _const_op(local_size(), name)


def rank_op(name=None):
    return _const_op(rank(), name)


def local_rank_op(name=None):
    return _const_op(local_rank(), name)
