"""DistributedOptimizer: horovod.torch's wrapper that averages gradients over
ranks. Each gradient's allreduce starts from a hook on its accumulator as soon
as backward has produced it, so communication overlaps the rest of backward;
step() waits for them all and then applies the wrapped optimizer's update."""

import os
import warnings
from contextlib import contextmanager

import torch

from .. import _core
from .compression import Compression
from .mpi_ops import (Average, Adasum, allreduce_async_, global_process_set,
                      grouped_allreduce_async_, sparse_allreduce_async)
from .._lib import ERR_UNSUPPORTED, UnsupportedError


class _DistributedOptimizer:
    """Mixed into the wrapped optimizer's class by DistributedOptimizer()."""

    def _dc_setup(self, named_parameters, compression, backward_passes_per_step, op,
                  gradient_predivide_factor, num_groups, groups, sparse_as_dense, process_set):
        if op == Adasum:
            raise UnsupportedError(ERR_UNSUPPORTED, "Adasum is not supported by dcomm; use "
                                   "op=Average or op=Sum", "DistributedOptimizer")
        if gradient_predivide_factor != 1.0 and op != Average:
            raise ValueError("gradient_predivide_factor != 1.0 needs op=Average")
        self._compression = compression
        self._op = op
        self._predivide = gradient_predivide_factor
        self._sparse_as_dense = sparse_as_dense
        self._process_set = process_set
        params = [p for group in self.param_groups for p in group["params"]]
        if named_parameters is not None:
            named_parameters = list(named_parameters)
            if any(not isinstance(np_, tuple) for np_ in named_parameters):
                raise ValueError("named_parameters should be (name, parameter) tuples, as "
                                 "model.named_parameters() gives")
            names = [n for n, _ in named_parameters]
            dups = sorted({n for n in names if names.count(n) > 1})
            if dups:
                raise ValueError("parameter names must be unique; duplicates: %s" % ", ".join(dups))
            named_ids = {id(p) for _, p in named_parameters}
            unnamed = [p for p in params if id(p) not in named_ids]
            if unnamed:
                raise ValueError("named_parameters was given but %d optimized parameters are "
                                 "not in it" % len(unnamed))
            self._names = {id(p): n for n, p in named_parameters}
        else:
            self._names = {id(p): "allreduce.noname.%d.%d" % (g, i)
                           for g, group in enumerate(self.param_groups)
                           for i, p in enumerate(group["params"])}
        # Horovod's name for it: parameter -> the name its gradient is reduced under
        self._parameter_names = {p: self._names[id(p)] for p in params}
        self._groups = self._make_groups(params, num_groups, groups)
        self.backward_passes_per_step = backward_passes_per_step
        self._delay = {id(p): backward_passes_per_step for p in params}
        self._handles = {}        # id(p) -> (handle, ctx, compressed tensor)
        self._ready = {}          # group index -> ids of params whose gradient is ready
        self._grad_accs = []
        self._requires_update = [p for p in params if p.requires_grad]
        self._synchronized = False
        self._should_synchronize = True
        self._life = _core._life  # the runtime's life the pending handles belong to
        # An elastic job's size changes: hooks from the start, idle while it is 1.
        self._elastic = os.environ.get("DCOMM_ELASTIC_WORKER") is not None
        if process_set.included() and (process_set.size() > 1 or self._elastic):
            self._register_hooks()

    def _abandon(self):
        """Forgets the pending allreduces (a failed step, or an earlier runtime
        life in an elastic job): the next backward starts afresh."""
        self._handles.clear()
        self._ready.clear()
        for k in self._delay:
            self._delay[k] = self.backward_passes_per_step

    def _drop_stale(self):
        if self._life != _core._life:
            self._abandon()
            self._life = _core._life

    @staticmethod
    def _make_groups(params, num_groups, groups):
        """id(p) -> group index, for params reduced together as one grouped allreduce."""
        if groups is not None:
            if isinstance(groups, int):
                num_groups = groups
            else:
                return {id(p): g for g, members in enumerate(groups) for p in members}
        if num_groups:
            per = -(-len(params) // num_groups)
            return {id(p): i // per for i, p in enumerate(params)}
        return {}

    def set_backward_passes_per_step(self, passes):
        self.backward_passes_per_step = passes
        for k in self._delay:
            self._delay[k] = passes

    def _register_hooks(self):
        for p in self._requires_update:
            # The AccumulateGrad node of p: its hook runs once p.grad holds
            # this backward's gradient.
            acc = p.expand_as(p).grad_fn.next_functions[0][0]
            acc.register_hook(self._make_hook(p))
            self._grad_accs.append(acc)

    def _make_hook(self, p):
        def hook(*_ignored):
            key = id(p)
            self._drop_stale()
            if self._elastic and self._process_set.size() == 1:
                return  # an elastic job down to one rank: nothing to reduce
            if key in self._handles and self._handles[key][0] is not None:
                raise AssertionError("gradients were computed more than backward_passes_per_step "
                                     "times before step(); raise backward_passes_per_step to "
                                     "accumulate gradients locally")
            self._delay[key] -= 1
            if self._delay[key] == 0:
                self._start(p)
            else:
                self._handles[key] = (None, None, None)
        return hook

    def _scales(self):
        if self._op == Average:
            return 1.0 / self._predivide, self._predivide
        return 1.0, 1.0

    @staticmethod
    def _grad_of(p):
        """p's gradient as a dense tensor to reduce (zeros for a parameter
        backward did not reach; a dense copy of a sparse gradient)."""
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return p.grad.to_dense() if p.grad.is_sparse else p.grad

    def _start(self, p, force=False):
        """Starts p's allreduce, or, when p is in a group, the group's once all
        its members are ready (force: start the group now, in synchronize)."""
        g = self._groups.get(id(p))
        if g is None:
            self._start_tensors([p], self._names[id(p)], single=True)
            return
        ready = self._ready.setdefault(g, set())
        ready.add(id(p))
        members = [q for q in self._requires_update if self._groups.get(id(q)) == g]
        if force or len(ready) == len(members):
            self._start_tensors(members, "grouped.%d.%s" % (g, self._names[id(members[0])]),
                                single=False)
            del self._ready[g]

    def _start_tensors(self, ps, name, single):
        if single and ps[0].grad is not None and ps[0].grad.is_sparse and \
                not self._sparse_as_dense:
            # As Horovod: indices and values allgathered, the result sparse.
            handle = sparse_allreduce_async(ps[0].grad, name, self._op, self._process_set)
            self._handles[id(ps[0])] = (handle, None, None)
            return
        pre, post = self._scales()
        pairs = [self._compression.compress(self._grad_of(p)) for p in ps]
        tensors = [t for t, _ in pairs]
        if single:
            handle = allreduce_async_(tensors[0], name=name, op=self._op, prescale_factor=pre,
                                      postscale_factor=post, process_set=self._process_set)
        else:
            handle = grouped_allreduce_async_(tensors, name=name, op=self._op,
                                              prescale_factor=pre, postscale_factor=post,
                                              process_set=self._process_set)
        for p, (t, ctx) in zip(ps, pairs):
            self._handles[id(p)] = (handle, ctx, t)

    def synchronize(self):
        self._drop_stale()
        if not self._grad_accs or (self._elastic and self._process_set.size() == 1):
            self._synchronized = True
            return
        try:
            self._synchronize()
        except BaseException:
            self._abandon()  # e.g. a lost peer: an elastic job restores and retries
            raise

    def _synchronize(self):
        for p in self._requires_update:     # parameters backward did not reach
            h = self._handles.get(id(p))
            if h is None or h[0] is None:
                self._start(p, force=True)
        done = set()
        by_id = {id(p): p for p in self._requires_update}
        for key, (handle, ctx, tensor) in list(self._handles.items()):
            p = by_id[key]
            if tensor is None:              # a sparse allreduce
                out = handle()
            else:
                if id(handle) not in done:
                    handle.synchronize()
                    done.add(id(handle))
                out = self._compression.decompress(tensor, ctx)
            with torch.no_grad():
                if p.grad.is_sparse:
                    # sparse_as_dense reduced it dense: back to sparse for the update
                    p.grad.zero_().add_(out if out.is_sparse else out.to_sparse())
                elif out.data_ptr() != p.grad.data_ptr():
                    p.grad.copy_(out)
            self._delay[key] = self.backward_passes_per_step
        self._handles.clear()
        self._synchronized = True

    @contextmanager
    def skip_synchronize(self):
        """For step() after an explicit synchronize() (e.g. gradient clipping)."""
        self._should_synchronize = False
        try:
            yield
        finally:
            self._should_synchronize = True

    def step(self, closure=None):
        if self._should_synchronize:
            if self._synchronized:
                warnings.warn("optimizer.step() called without optimizer.skip_synchronize() "
                              "after optimizer.synchronize(); gradients are reduced twice")
            self.synchronize()
        self._synchronized = False
        return self._dc_base.step(self, closure)

    def zero_grad(self, *args, **kwargs):
        self._drop_stale()
        if self._handles:
            raise AssertionError("optimizer.zero_grad() was called after loss.backward() but "
                                 "before optimizer.step() or optimizer.synchronize()")
        return self._dc_base.zero_grad(self, *args, **kwargs)


def DistributedOptimizer(optimizer, named_parameters=None, compression=Compression.none,
                         backward_passes_per_step=1, op=Average, gradient_predivide_factor=1.0,
                         num_groups=0, groups=None, sparse_as_dense=False,
                         process_set=global_process_set):
    """Wraps a torch.optim.Optimizer so that step() applies gradients averaged
    (op) over the ranks of process_set. Same arguments as horovod.torch's.
    groups: a list of lists of parameters each reduced as one grouped allreduce
    (or an int: that many groups); gradient_predivide_factor f splits the
    average as a 1/f scale before the sum and f/size after it."""
    base = optimizer.__class__
    methods = {k: v for k, v in _DistributedOptimizer.__dict__.items()
               if not k.startswith("__")}
    methods["_dc_base"] = base
    cls = type(base.__name__, (base,), methods)
    dist = cls.__new__(cls)
    # Same param_groups (with their hyper-parameters) and state as the original.
    torch.optim.Optimizer.__init__(dist, optimizer.param_groups, optimizer.defaults)
    dist.__dict__.update({k: v for k, v in optimizer.__dict__.items()
                          if k not in ("param_groups", "state")})
    dist.state = optimizer.state
    dist._dc_setup(named_parameters, compression, backward_passes_per_step, op,
                   gradient_predivide_factor, num_groups, groups, sparse_as_dense, process_set)
    return dist
