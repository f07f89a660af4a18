"""Framework-neutral part of the binding: life cycle, identity, process sets,
handles, and the collectives written once against a small array adapter
(NumPy's in dcomm/__init__.py, PyTorch's in dcomm/torch/mpi_ops.py).

Buffers are passed to libdcomm by pointer (no copy) when they are contiguous;
the handle keeps them alive until it is synchronized or collected.
"""

import atexit
import ctypes
import enum
import threading
import weakref

from . import _lib
from ._lib import DcommError, UnsupportedError, check, lib


class ReduceOp(enum.IntEnum):
    """Reduction ops; values are dcomm_op_t except ADASUM, which dcomm lacks."""
    SUM = 0
    AVERAGE = 1
    MIN = 2
    MAX = 3
    PRODUCT = 4
    ADASUM = 100


Sum, Average, Min, Max, Product, Adasum = (ReduceOp.SUM, ReduceOp.AVERAGE, ReduceOp.MIN,
                                           ReduceOp.MAX, ReduceOp.PRODUCT, ReduceOp.ADASUM)


def _as_op(op):
    try:
        op = ReduceOp(op)
    except ValueError:
        raise ValueError("unknown reduction op %r; use Sum, Average, Min, Max or Product" % (op,))
    if op == ReduceOp.ADASUM:
        raise UnsupportedError(_lib.ERR_UNSUPPORTED, "Adasum is not supported by dcomm; "
                               "use Average or Sum", "allreduce")
    return op


# ---- life cycle and identity -------------------------------------------------------

# Each init starts a new life of the runtime: handles and process sets of an
# earlier one are void (their numbers may be reused by the new runtime).
_life = 0
_exit_hook = False


def _shutdown_at_exit():
    """As Horovod's init does: a process that exits initialized shuts the
    runtime down, so its peers see a shutdown (their pending operations fail
    naming this rank) rather than a vanished process."""
    if lib.dcomm_is_initialized():
        try:
            shutdown()
        except DcommError:  # exiting anyway; the runtime reported the cause
            pass


def init():
    global _life, _exit_hook
    if lib.dcomm_is_initialized():
        return
    check(lib.dcomm_init(), "dcomm_init")
    _life += 1
    global_process_set._attach(0)
    if not _exit_hook:
        atexit.register(_shutdown_at_exit)
        _exit_hook = True


def shutdown():
    check(lib.dcomm_shutdown(), "dcomm_shutdown")
    for ps in list(_registered):  # their comms died with the runtime
        ps.process_set_id = None
    _registered.clear()
    with _orphans_lock:
        _orphans.clear()      # the runtime completed and forgot them
        _taken.clear()
        _taken_by.clear()


def is_initialized():
    return bool(lib.dcomm_is_initialized())


def _identity(fn):
    def query():
        value = fn()
        if value < 0:
            raise ValueError("dcomm has not been initialized; call init() first")
        return value
    query.__name__ = fn.__name__.replace("dcomm_", "")
    query.__doc__ = "This process's %s (ValueError before init)." % query.__name__
    return query


rank = _identity(lib.dcomm_rank)
size = _identity(lib.dcomm_size)
local_rank = _identity(lib.dcomm_local_rank)
local_size = _identity(lib.dcomm_local_size)
cross_rank = _identity(lib.dcomm_cross_rank)
cross_size = _identity(lib.dcomm_cross_size)


# ---- process sets --------------------------------------------------------------------

class ProcessSet:
    """A subset of the job's ranks (a dcomm communicator). Create it with the
    sorted global ranks, then register it on every rank with add_process_set
    (or pass it to init(process_sets=...)). process_set_id is None until then."""

    def __init__(self, ranks):
        ranks = sorted(int(r) for r in ranks)
        if len(set(ranks)) != len(ranks):
            raise ValueError("process set ranks must be distinct: %r" % ranks)
        self.ranks = ranks
        self.process_set_id = None

    def _attach(self, comm):
        self.process_set_id = comm

    def _comm(self):
        if self.process_set_id is None:
            raise ValueError("process set %r is not registered; call add_process_set "
                             "on every rank first" % (self.ranks,))
        return self.process_set_id

    def size(self):
        return lib.dcomm_comm_size(self._comm())

    def rank(self):
        """This process's rank within the set, -1 when not a member."""
        return lib.dcomm_comm_rank(self._comm())

    def included(self):
        return self.rank() >= 0

    def comm_rank_of(self, global_rank):
        """Rank within the set of a global rank (what libdcomm calls a root)."""
        if self is global_process_set:
            return global_rank
        if global_rank not in self.ranks:
            raise ValueError("rank %d is not in process set %r" % (global_rank, self.ranks))
        return self.ranks.index(global_rank)

    def __repr__(self):
        if self is global_process_set:
            return "ProcessSet(global)"
        return "ProcessSet(ranks=%r, id=%r)" % (self.ranks, self.process_set_id)


class _GlobalProcessSet(ProcessSet):
    def __init__(self):
        self.process_set_id = 0

    @property
    def ranks(self):
        return list(range(size()))


global_process_set = _GlobalProcessSet()
_registered = weakref.WeakSet()   # sets added in this life (void after shutdown)


def add_process_set(process_set):
    """Collective over all ranks: registers a ProcessSet (or a list of ranks)."""
    if not isinstance(process_set, ProcessSet):
        process_set = ProcessSet(process_set)
    if process_set.process_set_id is not None:
        raise ValueError("%r is already registered" % (process_set,))
    ranks = (ctypes.c_int * len(process_set.ranks))(*process_set.ranks)
    comm = ctypes.c_int32()
    check(lib.dcomm_comm_create(ranks, len(process_set.ranks), ctypes.byref(comm)),
          "add_process_set")
    process_set._attach(comm.value)
    _registered.add(process_set)
    return process_set


def remove_process_set(process_set):
    """Collective over all ranks; True when the set was registered and is now removed."""
    if process_set is global_process_set or process_set.process_set_id in (None, 0):
        return False
    check(lib.dcomm_comm_destroy(process_set.process_set_id), "remove_process_set")
    process_set.process_set_id = None
    _registered.discard(process_set)
    return True


# ---- handles ---------------------------------------------------------------------

# Handles dropped before completion (Horovod lets an async op run on when its
# handle is never synchronized): their buffers stay alive here until the op is
# done, then the handle is released. Swept at each submission.
_orphans = []
_orphans_lock = threading.RLock()   # __del__ may run inside a holder


# Names in use, (comm, name) -> raw handle: taken from submission until the
# handle is synchronized, or (dropped unsynchronized) until a sweep after
# the next submission finds its op done. So reusing a name while its handle
# is pending fails deterministically with DuplicateNameError, whether or
# not the runtime has already completed the op (Horovod's check races with
# its background thread).
_taken = {}
_taken_by = {}


def _release(raw):
    """Releases a handle and frees its name (caller holds _orphans_lock)."""
    lib.dcomm_release(raw)
    _taken.pop(_taken_by.pop(raw, None), None)


def _sweep_orphans():
    with _orphans_lock:
        if not _orphans:
            return
        done = ctypes.c_int()
        left = []
        for raw, life, keep in _orphans:
            if life != _life:
                continue
            if lib.dcomm_poll(raw, ctypes.byref(done)) < 0 or done.value:
                _release(raw)
            else:
                left.append((raw, life, keep))
        _orphans[:] = left


class Handle:
    """An operation in flight. poll() says whether it is done; synchronize()
    waits, raises DcommError on failure and returns the output. A handle
    dropped unsynchronized lets its op complete in the background."""

    def __init__(self, raw, what, keep, finish):
        self._life = _life
        self._raw = raw
        self.what = what          # "allreduce 'name'", for messages
        self._keep = keep         # buffers libdcomm borrows
        self._finish = finish     # Handle -> output, called once after success
        self._lock = threading.Lock()
        self._done = False
        self._output = None

    def _check_life(self):
        if self._life != _life:
            raise DcommError(_lib.ERR_SHUT_DOWN, "%s was started before dcomm was shut down; "
                             "its handle is void" % self.what, self.what)

    def poll(self):
        if self._done:
            return True
        self._check_life()
        done = ctypes.c_int()
        check(lib.dcomm_poll(self._raw, ctypes.byref(done)), "poll " + self.what)
        return bool(done.value)

    def result(self):
        """(pointer, count, rank_counts) of a completed allgather/alltoall/
        reducescatter/join; the memory belongs to the handle."""
        data = ctypes.c_void_p()
        count = ctypes.c_size_t()
        rank_counts = ctypes.POINTER(ctypes.c_size_t)()
        check(lib.dcomm_result(self._raw, ctypes.byref(data), ctypes.byref(count),
                               ctypes.byref(rank_counts)), "result of " + self.what)
        return data.value, count.value, rank_counts

    def synchronize(self):
        with self._lock:
            if self._done:
                return self._output
            self._check_life()
            status = lib.dcomm_wait(self._raw)
            try:
                if status < 0:
                    check(status, self.what)
                self._output = self._finish(self)
            finally:
                self._done = True
                with _orphans_lock:
                    _release(self._raw)
                self._keep = self._finish = None
            return self._output

    def __call__(self):
        """Horovod's handles of sparse_allreduce_async are called to wait."""
        return self.synchronize()

    def __del__(self):
        # The op may still be in flight: its buffers (kept alive by the
        # orphan entry) must outlive it; the sweep releases it once done.
        if getattr(self, "_done", True) or lib is None or self._life != _life:
            return
        with _orphans_lock:
            _orphans.append((self._raw, self._life, self._keep))


class GroupHandle:
    """Several handles completed together (grouped ops); output is a list."""

    def __init__(self, handles, finish=None):
        self.handles = handles
        self._finish = finish

    def poll(self):
        return all(h.poll() for h in self.handles)

    def synchronize(self):
        outputs, error = [], None
        for h in self.handles:        # wait for every member even after a failure
            try:
                outputs.append(h.synchronize())
            except DcommError as exc:
                error = error or exc
        if error is not None:
            raise error
        return self._finish(outputs) if self._finish else outputs


def blocking(submit):
    """The synchronous form of a call: submit() starts it (one or more _async
    submissions, returning a handle), then this thread waits on it at once.
    libdcomm is told so: the submissions do not wake its coordinator thread,
    since the wait runs the coordinator's cycles itself (DCOMM_WAIT_PROGRESS),
    with no thread hand-off either way."""
    hint = _lib.hint_wait_follows
    if hint is None:
        return submit().synchronize()
    hint(1)
    try:
        handle = submit()
    finally:
        hint(0)
    return handle.synchronize()


def poll(handle):
    return handle.poll()


def synchronize(handle):
    return handle.synchronize()


def _submit(fn, call, comm, *args, name=None, shape=None):
    """Submits one op on comm; name (str or None) must not be taken; shape
    (a sequence of ints) is checked across ranks."""
    key = (comm, name)
    with _orphans_lock:
        if name is not None and key in _taken:
            raise _lib.DuplicateNameError(_lib.ERR_DUPLICATE_NAME, "%s: tensor %r is already in "
                                          "flight on process set %d (its handle has not been "
                                          "synchronized)" % (call, name, comm), call)
        if shape is not None:
            dims = (ctypes.c_int64 * max(len(shape), 1))(*shape)
            check(lib.dcomm_set_shape(len(shape), dims), call)
        raw = ctypes.c_uint64()
        check(fn(comm, *([_lib.encode_name(name)] if fn in _NAMED else []), *args,
                 ctypes.byref(raw)), call)
        if name is not None:
            _taken[key] = raw.value
            _taken_by[raw.value] = key
    _sweep_orphans()
    return raw.value


# The calls that take a tensor name after the comm.
_NAMED = (lib.dcomm_allreduce_async, lib.dcomm_broadcast_async, lib.dcomm_allgather_async,
          lib.dcomm_alltoall_async, lib.dcomm_reducescatter_async)


# ---- collectives over an array adapter --------------------------------------------

def _prod(dims):
    n = 1
    for d in dims:
        n *= d
    return n


class ArrayAdapter:
    """Base of the framework adapters: codes maps the framework's dtypes to
    dcomm_dtype_t; subclasses add pointers, allocation, copies and scaling."""
    codes = {}

    def dtype_code(self, x):
        return self.codes.get(x.dtype)

    @staticmethod
    def dtype_name(x):
        return str(x.dtype)

    def supported(self):
        return [str(d) for d in self.codes]


class Collectives:
    """The collectives of the binding, written once for any array type. The
    adapter says how to get a contiguous buffer's pointer and dtype code, make
    arrays, copy a result out of libdcomm and scale in place."""

    def __init__(self, adapter):
        self.a = adapter

    def _reduce_dtype(self, x, what):
        code = self.a.dtype_code(x)
        if code is None:
            raise TypeError("%s: dtype %s is not supported for reductions by dcomm (supported: "
                            "%s)" % (what, self.a.dtype_name(x), ", ".join(self.a.supported())))
        return code

    def _move_dtype(self, x):
        """(code, elements per array element) for data movement: dtypes the
        ABI lacks travel as bytes."""
        code = self.a.dtype_code(x)
        if code is None:
            return _lib.UINT8, self.a.itemsize(x)
        return code, 1

    def _post_reduce(self, out, op_avg_int, nranks, postscale):
        if op_avg_int:
            self.a.trunc_div_(out, nranks)
        if postscale != 1.0:
            self.a.scale_(out, postscale)

    def allreduce_async(self, x, op, name, ps, prescale=1.0, postscale=1.0, inplace=False):
        op = _as_op(op)
        what = "allreduce %r" % (name,)
        code = self._reduce_dtype(x, what)
        buf, copied = self.a.contiguous(x)
        avg_int = op == ReduceOp.AVERAGE and code not in _lib.FLOATING
        cop = ReduceOp.SUM if avg_int else op
        if inplace:
            send = recv = buf           # x itself, or its contiguous copy
        elif prescale != 1.0:
            send = recv = buf if copied else self.a.clone(buf)
        else:
            send, recv = buf, self.a.empty_like(buf)
        if prescale != 1.0:
            self.a.scale_(send, prescale)
        nranks = ps.size()
        raw = _submit(lib.dcomm_allreduce_async, "allreduce", ps._comm(), self.a.ptr(send),
                      self.a.ptr(recv), self.a.numel(send), code, int(cop), name=name,
                      shape=self.a.shape(buf))

        def finish(_h):
            self._post_reduce(recv, avg_int, nranks, postscale)
            if inplace:
                if copied:
                    self.a.copy_(x, recv)
                return x
            return recv
        return Handle(raw, what, (x, send, recv), finish)

    def broadcast_async(self, x, root_rank, name, ps, inplace=False):
        what = "broadcast %r" % (name,)
        code, mult = self._move_dtype(x)
        buf, copied = self.a.contiguous(x)
        if not inplace and not copied:
            buf = self.a.clone(buf)
        raw = _submit(lib.dcomm_broadcast_async, "broadcast", ps._comm(), self.a.ptr(buf),
                      self.a.numel(buf) * mult, code, ps.comm_rank_of(int(root_rank)),
                      name=name, shape=self.a.shape(buf))

        def finish(_h):
            if inplace:
                if copied:
                    self.a.copy_(x, buf)
                return x
            return buf
        return Handle(raw, what, (x, buf), finish)

    def _gathered(self, h, nranks, like, mult, row_shape):
        """The result of h as an array of rows of row_shape, with each rank's
        row count; checks every rank sent whole rows."""
        ptr, count, rank_counts = h.result()
        width = _prod(row_shape) * mult
        rows = []
        for r in range(nranks):
            n = rank_counts[r]
            if width and n % width:
                raise DcommError(-3, "%s: rank %d sent %d elements, not "
                                 "whole rows of shape %r as this rank did: trailing dimensions "
                                 "must match on every rank" % (h.what, r, n // mult,
                                                              tuple(row_shape)), h.what)
            rows.append(n // width if width else 0)
        out = self.a.from_pointer(ptr, count // mult if mult else 0, like,
                                  (sum(rows),) + tuple(row_shape))
        return out, rows

    def allgather_async(self, x, name, ps, with_rows=False):
        """Output: the gathered array, or (array, rows per rank) with with_rows."""
        what = "allgather %r" % (name,)
        code, mult = self._move_dtype(x)
        buf, _ = self.a.contiguous(x)
        shape = self.a.shape(buf) or (1,)
        raw = _submit(lib.dcomm_allgather_async, "allgather", ps._comm(), self.a.ptr(buf),
                      self.a.numel(buf) * mult, code, name=name, shape=shape)
        n = ps.size()
        pick = (lambda r: r) if with_rows else (lambda r: r[0])
        return Handle(raw, what, (x, buf), lambda h: pick(self._gathered(h, n, buf, mult, shape[1:])))

    def alltoall_async(self, x, splits, name, ps):
        """Output of synchronize: (array, received splits as a list)."""
        what = "alltoall %r" % (name,)
        code, mult = self._move_dtype(x)
        buf, _ = self.a.contiguous(x)
        shape = self.a.shape(buf) or (1,)
        n = ps.size()
        if splits is None:
            if shape[0] % n:
                raise ValueError("%s: first dimension %d is not divisible by the %d ranks; "
                                 "pass splits" % (what, shape[0], n))
            splits = [shape[0] // n] * n
        splits = [int(s) for s in splits]
        if len(splits) != n or any(s < 0 for s in splits) or sum(splits) != shape[0]:
            raise ValueError("%s: splits %r must be %d non-negative counts summing to the first "
                             "dimension %d" % (what, splits, n, shape[0]))
        width = _prod(shape[1:]) * mult
        counts = (ctypes.c_size_t * n)(*[s * width for s in splits])
        raw = _submit(lib.dcomm_alltoall_async, "alltoall", ps._comm(), self.a.ptr(buf), counts,
                      code, name=name, shape=shape)
        return Handle(raw, what, (x, buf, counts),
                      lambda h: self._gathered(h, n, buf, mult, shape[1:]))

    def reducescatter_async(self, x, op, name, ps, prescale=1.0, postscale=1.0):
        """Splits along the first dimension: set rank r gets rows/n rows, the
        first rows % n ranks one more."""
        op = _as_op(op)
        what = "reducescatter %r" % (name,)
        code = self._reduce_dtype(x, what)
        buf, copied = self.a.contiguous(x)
        shape = self.a.shape(buf)
        if not shape:
            raise ValueError("%s: a scalar cannot be scattered; reducescatter needs at least "
                             "one dimension" % what)
        n, me = ps.size(), ps.rank()
        rows, width = shape[0], _prod(shape[1:])
        mine = rows // n + (1 if me < rows % n else 0)
        first = me * (rows // n) + min(me, rows % n)
        if width != 1 and rows % n:
            # libdcomm splits by elements; rows of several elements would not
            # fall on its boundaries, so reduce everything and keep our rows.
            inner = self.allreduce_async(x, op, name, ps, prescale, postscale)
            h = GroupHandle([inner], lambda outs: self.a.narrow(outs[0], first, mine))
            h.what = what
            return h
        avg_int = op == ReduceOp.AVERAGE and code not in _lib.FLOATING
        if prescale != 1.0:
            buf = self.a.clone(buf) if not copied else buf
            self.a.scale_(buf, prescale)
        raw = _submit(lib.dcomm_reducescatter_async, "reducescatter", ps._comm(),
                      self.a.ptr(buf), self.a.numel(buf), code,
                      int(ReduceOp.SUM if avg_int else op), name=name, shape=shape)

        def finish(h):
            ptr, count, _ = h.result()
            out = self.a.from_pointer(ptr, count, buf, (mine,) + tuple(shape[1:]))
            self._post_reduce(out, avg_int, n, postscale)
            return out
        return Handle(raw, what, (x, buf), finish)

    def grouped_allreduce_async(self, xs, op, name, ps, prescale=1.0, postscale=1.0,
                                inplace=False):
        xs = list(xs)
        handles = [self.allreduce_async(t, op, None if name is None else "%s.%d" % (name, i), ps,
                                        prescale, postscale, inplace) for i, t in enumerate(xs)]
        return GroupHandle(handles)


def barrier_async(ps):
    return Handle(_submit(lib.dcomm_barrier_async, "barrier", ps._comm()), "barrier", None,
                  lambda h: None)


def join_async(ps):
    """Output: the rank (in the set) that joined last."""
    def finish(h):
        ptr, count, _ = h.result()
        if count != 1 or not ptr:
            raise DcommError(-12, "join returned %d values, expected 1" % count, "join")
        return ctypes.c_int32.from_address(ptr).value
    return Handle(_submit(lib.dcomm_join_async, "join", ps._comm()), "join", None, finish)


def barrier(ps=global_process_set):
    blocking(lambda: barrier_async(ps))


def join(ps=global_process_set):
    return join_async(ps).synchronize()


def start_timeline(file_path, mark_cycles=False):
    """Starts a Chrome-trace timeline written by rank 0 (mark_cycles: accepted
    for Horovod compatibility; dcomm marks no cycles)."""
    check(lib.dcomm_timeline_start(str(file_path).encode()), "start_timeline")


def stop_timeline():
    check(lib.dcomm_timeline_stop(), "stop_timeline")
