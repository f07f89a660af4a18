"""horovod.torch's helpers: broadcast of parameters, optimizer state and
arbitrary picklable objects, and allgather of objects."""

import io
import pickle

import torch

from .mpi_ops import _ops, broadcast_, broadcast_async_, global_process_set, rank, synchronize


def broadcast_parameters(params, root_rank, prefix=None):
    """Broadcasts in place a model's state_dict(), named_parameters() or
    parameters() (dict, or list of tensors or (name, tensor) pairs) from root_rank."""
    if isinstance(params, dict):
        items = sorted(params.items())
    elif isinstance(params, (list, tuple)) or hasattr(params, "__iter__"):
        items = [p if isinstance(p, tuple) else ("param.%d" % i, p)
                 for i, p in enumerate(params)]
    else:
        raise ValueError("invalid params of type %s" % type(params).__name__)
    prefix = prefix or "broadcast_parameters."
    handles = [broadcast_async_(p, root_rank, name=prefix + str(n)) for n, p in items
               if isinstance(p, torch.Tensor)]
    for h in handles:
        synchronize(h)


def _to_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_module=pickle)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _from_bytes(t):
    return torch.load(io.BytesIO(t.numpy().tobytes()), pickle_module=pickle)


def broadcast_object(obj, root_rank=0, name=None, process_set=global_process_set):
    """obj of root_rank (pickled; tensors included), returned on every rank."""
    name = name or type(obj).__name__
    payload = _to_bytes(obj) if rank() == root_rank else torch.empty(0, dtype=torch.uint8)
    length = torch.tensor([payload.numel()], dtype=torch.int64)
    broadcast_(length, root_rank, name="%s.len" % name, process_set=process_set)
    if rank() != root_rank:
        payload = torch.empty(int(length.item()), dtype=torch.uint8)
    broadcast_(payload, root_rank, name="%s.data" % name, process_set=process_set)
    return obj if rank() == root_rank else _from_bytes(payload)


def allgather_object(obj, name=None, process_set=global_process_set):
    """List of every set rank's obj, in rank order."""
    name = name or type(obj).__name__
    handle = _ops.allgather_async(_to_bytes(obj), "%s.allgather_object" % name, process_set,
                                  with_rows=True)
    gathered, rows = synchronize(handle)
    out, start = [], 0
    for n in rows:
        out.append(_from_bytes(gathered[start:start + n]))
        start += n
    return out


def _init_optimizer_state(optimizer, model):
    """As Horovod: a new optimizer's state is made by one step on zero
    gradients (sparse ones for SparseAdam and for model's sparse embeddings),
    taken by the wrapped optimizer alone (no allreduce)."""
    sparse = set()
    if model is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Embedding) and m.sparse:
                sparse.update(id(p) for p in m.parameters())
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
                if isinstance(optimizer, torch.optim.SparseAdam) or \
                        (isinstance(optimizer, torch.optim.SGD) and id(p) in sparse):
                    p.grad = p.grad.to_sparse()
    base = getattr(optimizer, "_dc_base", None)
    if base is not None:
        base.step(optimizer)
    else:
        optimizer.step()


def broadcast_optimizer_state(optimizer, root_rank, model=None):
    """Makes every rank's optimizer state and hyper-parameters those of
    root_rank. An optimizer without state yet gets it first, as in Horovod
    (model: tells which parameters are sparse embeddings)."""
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ValueError("cannot broadcast torch.optim.LBFGS state")
    if len(optimizer.state_dict()["state"]) == 0:
        _init_optimizer_state(optimizer, model)
    state = broadcast_object(optimizer.state_dict(), root_rank, name="optimizer_state")
    if rank() != root_rank:
        optimizer.load_state_dict(state)


__all__ = ["broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
           "allgather_object"]
