"""The torch.distributed backend "dcomm": a Python backend whose collectives
run through libdcomm's async handles, so that DDP's gradient buckets,
DistributedSampler and ZeRO-style optimizers work unchanged. On torch 2.x it
is a c10d Backend (torch._C._distributed_c10d.Backend) registered for CPU
tensors, which torch's ProcessGroup wraps; torch 1.13 has no such class and
takes a ProcessGroup subclass itself. Tested on Debian's torch 1.13 and PyPI's
2.15 (bench/torch_venv.sh).

    import dcomm.torch                      # registers the backend
    torch.distributed.init_process_group("dcomm")

Each op is submitted at once (several are in flight together, as DDP's
buckets are) and returns a Work over a torch Future, which one completion
thread per process resolves in submission order. Torch calls
ProcessGroup methods in the same order on every rank, so names are drawn from
one counter per group and op: identical on every rank, in step even after a
failed op, and a mismatch (a different size on one rank) is caught by
libdcomm's negotiation and named, as a failed op of every rank.
"""

import collections
import functools
import inspect
import queue
import threading

import torch
import torch.distributed as dist

from .. import _core, _lib
from . import mpi_ops, rendezvous

BACKEND = "dcomm"
# Names per op cycle through this many slots (bounded names and bookkeeping);
# a slot is reused only once its previous op has completed.
_SLOTS = 64
_PRUNE_EVERY = 256

_REDUCE_OPS = {"SUM": _core.Sum, "AVG": _core.Average, "MIN": _core.Min, "MAX": _core.Max,
               "PRODUCT": _core.Product}
_ops = mpi_ops._ops


class _Completer:
    """One thread per process that waits for the backend's handles in
    submission order and resolves their futures (result or RuntimeError)."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def add(self, handle, finish, fail):
        fut = torch.futures.Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dcomm-torch-completer",
                                                daemon=True)
                self._thread.start()
        self._queue.put((handle, finish, fail, fut))
        return fut

    def _run(self):
        while True:              # never ends: a future left unresolved would hang its waiter
            handle, finish, fail, fut = self._queue.get()
            try:
                with torch.no_grad():       # outputs may be parameters that require grad
                    value = finish(handle.synchronize())
            except Exception as exc:         # noqa: BLE001 -- every failure goes to the future
                try:
                    error = fail(exc)
                except Exception:            # noqa: BLE001
                    error = RuntimeError(str(exc))
                fut.set_exception(error)
                continue
            fut.set_result(value)


_completer = _Completer()

# Works handed to C++ (DDP's reducer calls get_future() on the Work it gets,
# torch's helpers wait() on theirs) must keep their Python half: without it
# C++ would reach the base class, whose wait() never returns. So every Work
# stays referenced here until its op is done and a few later ops have started.
_KEEP_DONE = 16
_alive = collections.deque()
_alive_lock = threading.Lock()


class Work(dist.distributed_c10d.Work):
    """An op in flight: wait() raises the op's RuntimeError (torch 1.13's
    future-wrapping Work would return True even after a failure)."""

    def __init__(self, fut):
        super().__init__()
        self._fut = fut

    def wait(self, timeout=None):
        self._fut.wait()          # raises the failure; libdcomm bounds every op itself
        return True

    def is_completed(self):
        return self._fut.done()

    def is_success(self):
        if not self._fut.done():
            return False
        try:
            self._fut.wait()
        except RuntimeError:
            return False
        return True

    def get_future(self):
        return self._fut

    def result(self):
        return self._fut.wait()

    def synchronize(self):
        pass


def _keep(work):
    with _alive_lock:
        _alive.append(work)
        done = 0
        for w in reversed(_alive):
            done += w.is_completed()
        while _alive and done > _KEEP_DONE and _alive[0].is_completed():
            _alive.popleft()
            done -= 1
    return work


def _collective(what):
    """A ProcessGroup method whose argument errors (and libdcomm's refusals at
    submission) raise RuntimeError naming the rank, as a failed op does."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            try:
                with torch.no_grad():       # collectives are not recorded by autograd
                    return method(self, *args, **kwargs)
            except (_lib.DcommError, TypeError, ValueError) as exc:
                raise self._fail(what, exc) from exc
        return run
    return wrap


def _reduce_op(reduce_op, what):
    op = getattr(reduce_op, "op", reduce_op)          # torch >= 1.13: ReduceOp.op is RedOpType
    name = getattr(op, "name", str(op)).rpartition(".")[2]
    if name not in _REDUCE_OPS:
        raise ValueError("%s: ReduceOp.%s is not supported by dcomm (SUM, AVG, MIN, MAX and "
                         "PRODUCT are)" % (what, name))
    return _REDUCE_OPS[name]


def _real(t, op, what):
    """A complex tensor reduces as its real view (sums and averages only)."""
    if not t.is_complex():
        return t
    if op not in (_core.Sum, _core.Average):
        raise ValueError("%s: complex tensors reduce only with SUM or AVG" % what)
    return torch.view_as_real(t)


def _copy_real(out, flat, op):
    """flat (real numbers) into out, complex or not."""
    dst = _real(out, op, "reduce_scatter")
    dst.copy_(flat.view(dst.shape))


def _flat(t):
    return t.reshape(-1)


def _check_numel(got, want, what):
    if got != want:
        raise ValueError("%s: %d elements where %d were expected" % (what, got, want))


def _copy_chunks(outs, flat, counts, what):
    """Rank r's part of flat (counts[r] elements) into outs[r]."""
    start = 0
    for r, out in enumerate(outs):
        _check_numel(counts[r], out.numel(), "%s: from rank %d" % (what, r))
        out.copy_(flat.narrow(0, start, counts[r]).view(out.shape))
        start += counts[r]


# torch >= 2.0 wraps a backend in its own ProcessGroup; 1.13 takes the group.
_BASE = getattr(torch._C._distributed_c10d, "Backend", None) or dist.ProcessGroup


class ProcessGroupDcomm(_BASE):
    """torch.distributed's backend (torch 2.x) or ProcessGroup (1.13) over one
    dcomm process set."""

    def __init__(self, rank, size, process_set, group_id, unavailable=None):
        super().__init__(rank, size)
        self._ps = process_set
        # this process's global rank, for messages (the default group is not yet
        # registered with torch while it is created)
        self._who = dist.get_rank() if dist.is_initialized() else _core.rank()
        self._prefix = "torch.pg%s" % group_id
        self._unavailable = unavailable     # why this group cannot run ops (or None)
        self._lock = threading.Lock()
        self._issued = {}                   # name stem -> ops issued under it
        self._slots = {}                    # name -> future of the last op of that name
        self._since_prune = 0

    def getBackendName(self):
        return BACKEND

    def __repr__(self):
        return "ProcessGroupDcomm(rank=%d, size=%d, %r)" % (self.rank(), self.size(), self._ps)

    # ---- submission ------------------------------------------------------------------

    def _fail(self, what, exc):
        return RuntimeError("dcomm backend, rank %d: %s failed: %s" % (self._who, what, exc))

    def _name(self, stem):
        """This op's name (same on every rank); waits for the slot's last op."""
        n = self._issued.get(stem, 0)
        self._issued[stem] = n + 1
        name = "%s.%s.%d" % (self._prefix, stem, n % _SLOTS)
        prev = self._slots.get(name)
        if prev is not None and not prev.done():
            try:
                prev.wait()
            except Exception:       # noqa: BLE001 -- that op's error is its own Work's
                pass
        return name

    def _prune(self):
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            self._slots = {k: f for k, f in self._slots.items() if not f.done()}

    def _start(self, what, parts, finish):
        """parts: [(name stem, submit(name) -> handle)]; finish(outputs) is the
        future's value (outputs: one per part). Returns the torch Work."""
        if self._unavailable:
            raise RuntimeError("dcomm backend, rank %d: %s: %s"
                               % (self._who, what, self._unavailable))
        with self._lock:
            names, handles = [], []
            try:
                for stem, submit in parts:
                    names.append(self._name(stem))
                    handles.append(submit(names[-1]))
            except BaseException:
                for h in handles:        # already submitted: let them finish in the background
                    _completer.add(h, lambda out: None, lambda e: e)
                raise
            handle = _core.GroupHandle(handles)
            fut = _completer.add(handle, finish, lambda exc: self._fail(what, exc))
            for name in names:
                self._slots[name] = fut
            self._prune()
        return _keep(Work(fut))

    def _root(self, root, what):
        if self._unavailable:
            return root             # _start says why
        if not 0 <= root < self.size():
            raise ValueError("%s: root %d is not a rank of this group (size %d)"
                               % (what, root, self.size()))
        return self._ps.ranks[root] if self._ps is not _core.global_process_set else root

    # ---- collectives -------------------------------------------------------------------

    @_collective("allreduce")
    def allreduce(self, tensors, opts=None):
        op = _reduce_op(opts.reduceOp if opts is not None else dist.ReduceOp.SUM, "allreduce")
        ts = [_real(t, op, "allreduce") for t in tensors]
        parts = [("allreduce",
                  lambda name, t=t: _ops.allreduce_async(t, op, name, self._ps, inplace=True))
                 for t in ts]
        return self._start("allreduce", parts, lambda _outs: list(tensors))

    def allreduce_coalesced(self, tensors, opts=None):
        return self.allreduce(tensors, opts)

    @_collective("reduce")
    def reduce(self, tensors, opts=None):
        op = _reduce_op(opts.reduceOp, "reduce")
        mine = self.rank() == opts.rootRank
        self._root(opts.rootRank, "reduce")
        ts = [_real(t, op, "reduce") for t in tensors]
        parts = [("reduce",
                  lambda name, t=t: _ops.allreduce_async(t, op, name, self._ps, inplace=mine))
                 for t in ts]
        return self._start("reduce", parts, lambda _outs: list(tensors))

    @_collective("broadcast")
    def broadcast(self, tensors, opts=None):
        root = self._root(opts.rootRank, "broadcast")
        parts = [("broadcast",
                  lambda name, t=t: _ops.broadcast_async(t, root, name, self._ps, inplace=True))
                 for t in tensors]
        return self._start("broadcast", parts, lambda _outs: list(tensors))

    def _gather_parts(self, stem, inputs):
        return [(stem, lambda name, t=t: _ops.allgather_async(_flat(t), name, self._ps,
                                                              with_rows=True))
                for t in inputs]

    @_collective("allgather")
    def allgather(self, output_lists, input_list, opts=None):
        for outs in output_lists:
            if len(outs) != self.size():
                raise ValueError("allgather: %d output tensors for a group of "
                                   "%d ranks" % (len(outs), self.size()))

        def finish(gathered):
            for outs, (flat, counts) in zip(output_lists, gathered):
                _copy_chunks(outs, flat, counts, "allgather")
            return list(output_lists)
        return self._start("allgather", self._gather_parts("allgather", input_list), finish)

    @_collective("all_gather_into_tensor")
    def _allgather_base(self, output, input, opts=None):
        _check_numel(output.numel(), input.numel() * self.size(), "all_gather_into_tensor output")

        def finish(gathered):
            flat, _counts = gathered[0]
            _check_numel(flat.numel(), output.numel(), "all_gather_into_tensor")
            output.copy_(flat.view(output.shape))
            return [output]
        return self._start("allgather", self._gather_parts("allgather", [input]), finish)

    @_collective("gather")
    def gather(self, output_lists, input_list, opts=None):
        self._root(opts.rootRank, "gather")
        mine = self.rank() == opts.rootRank

        def finish(gathered):
            if mine:
                for outs, (flat, counts) in zip(output_lists, gathered):
                    _copy_chunks(outs, flat, counts, "gather")
            return list(output_lists)
        return self._start("gather", self._gather_parts("gather", input_list), finish)

    def _reduce_scatter_parts(self, op, flats):
        return [("reducescatter",
                 lambda name, f=f: _ops.reducescatter_async(f, op, name, self._ps))
                for f in flats]

    @_collective("reduce_scatter")
    def reduce_scatter(self, outputs, input_lists, opts=None):
        op = _reduce_op(opts.reduceOp, "reduce_scatter")
        flats = []
        for out, ins in zip(outputs, input_lists):
            if len(ins) != self.size():
                raise ValueError("reduce_scatter: %d input tensors for a group "
                                   "of %d ranks" % (len(ins), self.size()))
            for t in ins:
                _check_numel(t.numel(), out.numel(), "reduce_scatter input")
            flats.append(torch.cat([_flat(_real(t, op, "reduce_scatter")) for t in ins]))

        def finish(blocks):
            for out, block in zip(outputs, blocks):
                _copy_real(out, block, op)
            return list(outputs)
        return self._start("reduce_scatter", self._reduce_scatter_parts(op, flats), finish)

    @_collective("reduce_scatter_tensor")
    def _reduce_scatter_base(self, output, input, opts=None):
        op = _reduce_op(opts.reduceOp, "reduce_scatter_tensor")
        _check_numel(input.numel(), output.numel() * self.size(), "reduce_scatter_tensor input")

        def finish(blocks):
            _copy_real(output, blocks[0], op)
            return [output]
        flat = _flat(_real(input, op, "reduce_scatter_tensor"))
        return self._start("reduce_scatter", self._reduce_scatter_parts(op, [flat]), finish)

    @_collective("all_to_all_single")
    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        splits = list(input_split_sizes) or None
        want = list(output_split_sizes)

        def finish(results):
            received, rows = results[0]
            if want and list(rows) != want:
                raise ValueError("all_to_all_single: received splits %r, output_split_sizes "
                                   "%r" % (list(rows), want))
            if tuple(received.shape) != tuple(output.shape):
                raise ValueError("all_to_all_single: received shape %r, output has %r"
                                   % (tuple(received.shape), tuple(output.shape)))
            output.copy_(received)
            return [output]
        return self._start("alltoall", [("alltoall", lambda name: _ops.alltoall_async(
            input, splits, name, self._ps))], finish)

    @_collective("all_to_all")
    def alltoall(self, outputs, inputs, opts=None):
        if len(inputs) != self.size() or len(outputs) != self.size():
            raise ValueError("all_to_all: %d inputs and %d outputs for a group "
                               "of %d ranks" % (len(inputs), len(outputs), self.size()))
        flat = torch.cat([_flat(t) for t in inputs])
        splits = [t.numel() for t in inputs]

        def finish(results):
            received, rows = results[0]
            _copy_chunks(outputs, received, rows, "all_to_all")
            return list(outputs)
        return self._start("alltoall", [("alltoall", lambda name: _ops.alltoall_async(
            flat, splits, name, self._ps))], finish)

    @_collective("scatter")
    def scatter(self, outputs, input_lists, opts=None):
        root = opts.rootRank
        self._root(root, "scatter")
        out = outputs[0]
        if self.rank() == root:
            ins = input_lists[0]
            if len(ins) != self.size():
                raise ValueError("scatter: %d inputs for a group of %d ranks"
                                   % (len(ins), self.size()))
            flat = torch.cat([_flat(t) for t in ins])
            splits = [t.numel() for t in ins]
        else:
            flat = out.new_empty(0)
            splits = [0] * self.size()

        def finish(results):
            received, rows = results[0]
            _check_numel(rows[root], out.numel(), "scatter: from rank %d" % root)
            out.copy_(received.view(out.shape))
            return [out]
        return self._start("scatter", [("scatter", lambda name: _ops.alltoall_async(
            flat, splits, name, self._ps))], finish)

    # torch 2.15 calls these three by new names (same arguments).
    all_gather_single = _allgather_base
    reduce_scatter_single = _reduce_scatter_base
    all_to_all_single = alltoall_base

    @_collective("barrier")
    def barrier(self, opts=None):
        return self._start("barrier", [("barrier", lambda _name: _core.barrier_async(self._ps))],
                           lambda _outs: [])

    # ---- what libdcomm has no counterpart for ----------------------------------------

    def _no_p2p(self, op):
        raise NotImplementedError("dcomm backend: %s is not supported: libdcomm has collectives "
                                  "only, no point-to-point operations" % op)

    def send(self, tensors, dst, tag=0):
        self._no_p2p("send")

    def recv(self, tensors, src, tag=0):
        self._no_p2p("recv")

    def recv_anysource(self, tensors, tag=0):
        self._no_p2p("recv_anysource")


# ---- creation ------------------------------------------------------------------------

# Process sets registered on every rank by new_group() below, waiting for
# torch to call the creator on the members: (ranks) -> [ProcessSet, ...].
_pending_sets = {}
_kept_sets = []        # non-members' copies of those sets (registered, unused)

_NEEDS_NEW_GROUP = ("this sub-group was made by torch.distributed.new_group alone, which asks "
                    "only its members to create it, while libdcomm's process sets are created "
                    "by every rank: create it with dcomm.torch.new_group(ranks) on every rank")


_NEEDS_RUNTIME = ("libdcomm is not initialized and only this group's members create it: make "
                  "the default group \"dcomm\" (or first a dcomm group of all ranks)")


def _create(opts, _pg_options=None):
    """Backend creator (torch's extended API): the default group initializes
    libdcomm; other groups take a process set from new_group() below."""
    members = sorted(opts.global_ranks_in_group)
    if not members:
        rendezvous.init_runtime(opts.store, opts.group_rank, opts.group_size)
        return ProcessGroupDcomm(opts.group_rank, opts.group_size, _core.global_process_set,
                                 opts.group_id)
    if not _core.is_initialized():
        if members != list(range(dist.get_world_size())):
            return ProcessGroupDcomm(opts.group_rank, opts.group_size, None, opts.group_id,
                                     unavailable=_NEEDS_RUNTIME)
        rendezvous.init_runtime(opts.store, dist.get_rank(), dist.get_world_size())
    if members == list(range(_core.size())):
        return ProcessGroupDcomm(opts.group_rank, opts.group_size, _core.global_process_set,
                                 opts.group_id)
    waiting = _pending_sets.get(tuple(members))
    if not waiting:
        return ProcessGroupDcomm(opts.group_rank, opts.group_size, None, opts.group_id,
                                 unavailable=_NEEDS_NEW_GROUP)
    ps = waiting.pop(0)
    return ProcessGroupDcomm(ps.rank(), ps.size(), ps, opts.group_id)


def new_group(ranks=None, timeout=None, backend=None, pg_options=None):
    """torch.distributed.new_group, for groups of the dcomm backend too: call
    it on every rank in the same order (as torch requires). It registers a
    dcomm process set of the ranks first, which torch's creator then takes."""
    world = dist.get_world_size()
    members = list(range(world)) if ranks is None else sorted(int(r) for r in ranks)
    kwargs = {"backend": backend, "pg_options": pg_options}
    if timeout is not None:
        kwargs["timeout"] = timeout
    uses_dcomm = str(backend or dist.get_backend()).lower() == BACKEND
    if not uses_dcomm or members == list(range(world)):
        return dist.new_group(ranks, **kwargs)
    ps = _core.add_process_set(members)
    key = tuple(members)
    _pending_sets.setdefault(key, []).append(ps)
    try:
        group = dist.new_group(members, **kwargs)
    finally:
        if ps in _pending_sets.get(key, ()):      # not taken: this rank is not a member
            _pending_sets[key].remove(ps)
            _kept_sets.append(ps)
    return group


def register():
    """Registers the "dcomm" backend with torch.distributed (once), and lets
    env:// work under dlaunch."""
    if BACKEND.upper() in dist.Backend._plugins:
        return
    kwargs = {"extended_api": True}
    if "devices" in inspect.signature(dist.Backend.register_backend).parameters:
        kwargs["devices"] = ["cpu"]          # torch >= 2.2; CUDA tensors are not taken yet
    dist.Backend.register_backend(BACKEND, _create, **kwargs)
    rendezvous.install_env_handler()
