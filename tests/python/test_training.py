"""DistributedOptimizer and SyncBatchNorm against single-process training on
the batch that all ranks together see."""

import pytest

torch = pytest.importorskip("torch")
import dcomm.torch as hvd  # noqa: E402

PER_RANK = 6     # samples per rank and step
STEPS = 4


def make_model(seed=1):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def global_batch(step):
    """The same on every rank: samples of all ranks for one step."""
    g = torch.Generator().manual_seed(100 + step)
    n = PER_RANK * hvd.size()
    return torch.randn(n, 5, generator=g, dtype=torch.float64).float(), \
        torch.randint(0, 3, (n,), generator=g)


def my_part(t):
    return t[hvd.rank() * PER_RANK:(hvd.rank() + 1) * PER_RANK]


def loss_fn(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


def train_reference(passes=1, scale=1.0):
    """One process, whole batch: the mean loss over all ranks' samples gives
    the gradient Average produces (scale: op=Sum multiplies it by size)."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(STEPS):
        opt.zero_grad()
        for k in range(passes):
            x, y = global_batch(step * passes + k)
            (loss_fn(model, x, y) * scale).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def train_distributed(passes=1, **kwargs):
    model = make_model(seed=1 + hvd.rank())            # differs until broadcast
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                   backward_passes_per_step=passes, **kwargs)
    for step in range(STEPS):
        opt.zero_grad()
        for k in range(passes):
            x, y = global_batch(step * passes + k)
            loss_fn(model, my_part(x), my_part(y)).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def assert_same_everywhere(params, tag):
    gathered = hvd.allgather(params.unsqueeze(0), name="same." + tag)
    for r in range(hvd.size()):
        assert torch.equal(gathered[r], params), "rank %d differs" % r


@pytest.mark.parametrize("variant", ["plain", "groups", "num_groups", "predivide", "fp16", "sum",
                                     "passes"])
def test_distributed_optimizer_matches_single_process(variant):
    kwargs, passes, scale, tol = {}, 1, 1.0, 1e-5
    if variant == "num_groups":
        kwargs["num_groups"] = 2
    if variant == "predivide":
        kwargs["gradient_predivide_factor"] = 2.0
    if variant == "fp16":
        kwargs["compression"] = hvd.Compression.fp16
        tol = 2e-3
    if variant == "sum":
        kwargs["op"] = hvd.Sum
        scale = float(hvd.size())
    if variant == "passes":
        passes = 2
    if variant == "groups":
        got = _train_with_groups()
    else:
        got = train_distributed(passes, **kwargs)
    want = train_reference(passes, scale)
    assert_same_everywhere(got, variant)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def _train_with_groups():
    model = make_model(seed=1 + hvd.rank())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    params = list(model.parameters())
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                   named_parameters=model.named_parameters(),
                                   groups=[params[:2], params[2:]])
    for step in range(STEPS):
        opt.zero_grad()
        x, y = global_batch(step)
        loss_fn(model, my_part(x), my_part(y)).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_synchronize_clip_and_misuse():
    model = make_model()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters())
    x, y = global_batch(0)
    loss_fn(model, my_part(x), my_part(y)).backward()
    # the hooks started every gradient's allreduce during backward, before step()
    if hvd.size() > 1:      # on one rank there is nothing to reduce, hence no hooks
        assert len(opt._handles) == len(list(model.parameters()))
        with pytest.raises(AssertionError, match="zero_grad"):
            opt.zero_grad()
    opt.synchronize()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    with opt.skip_synchronize():
        opt.step()
    opt.zero_grad()
    assert_same_everywhere(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), "clip")
    with pytest.raises(ValueError, match="unique"):
        hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                 named_parameters=[("a", p) for p in model.parameters()])
    with pytest.raises(NotImplementedError, match="Adasum"):
        hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), op=hvd.Adasum)


def test_sync_batch_norm_matches_batch_norm_on_whole_batch():
    torch.manual_seed(7)
    n = hvd.size()
    x_all = torch.randn(PER_RANK * n, 4, 3, dtype=torch.float64)
    w_out = torch.randn(PER_RANK * n, 4, 3, dtype=torch.float64)

    ref = torch.nn.BatchNorm1d(4).double()
    xr = x_all.clone().requires_grad_(True)
    yr = ref(xr)
    (yr * w_out).sum().backward()

    sbn = hvd.SyncBatchNorm(4).double()
    xm = my_part(x_all).clone().requires_grad_(True)
    out = sbn(xm)
    (out * my_part(w_out)).sum().backward()

    torch.testing.assert_close(out, my_part(yr).detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(xm.grad, my_part(xr.grad), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sbn.running_mean, ref.running_mean)
    torch.testing.assert_close(sbn.running_var, ref.running_var)
    wgrad = hvd.allreduce(sbn.weight.grad, op=hvd.Sum, name="sbn.wgrad")
    torch.testing.assert_close(wgrad, ref.weight.grad, rtol=1e-9, atol=1e-9)
    sbn.eval()
    torch.testing.assert_close(sbn(xm), ref.eval()(my_part(x_all)))


def test_zero_grad_set_to_none_and_a_gradient_only_some_ranks_have():
    """zero_grad(set_to_none=True) (torch 2's default) leaves p.grad None; a
    head that only rank 0 uses has no gradient on the other ranks, which
    reduce zeros for it, and a layer no rank uses gets zeros (as Horovod).
    The result is single-process training on the whole batch, every rank
    the same."""
    def model_with_head(seed):
        torch.manual_seed(seed)
        return make_model(seed), torch.nn.Linear(5, 1), torch.nn.Linear(5, 1)

    def head_loss(head, x):          # rank 0's samples, on rank 0 only
        return head(x).pow(2).mean()

    body, head, unused = model_with_head(1)
    params = list(body.parameters()) + list(head.parameters()) + list(unused.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        x, y = global_batch(step)
        # the average over ranks has 1/size of rank 0's head loss
        (loss_fn(body, x, y) + head_loss(head, x[:PER_RANK]) / hvd.size()).backward()
        opt.step()
    want = torch.cat([p.detach().reshape(-1) for p in params])

    body, head, unused = model_with_head(1 + hvd.rank())     # differs until broadcast
    named = [("body." + n, p) for n, p in body.named_parameters()] + \
        [("head." + n, p) for n, p in head.named_parameters()] + \
        [("unused." + n, p) for n, p in unused.named_parameters()]
    for n, p in named:
        hvd.broadcast_(p.data, root_rank=0, name="stn.init." + n)
    params = [p for _, p in named]
    opt = hvd.DistributedOptimizer(torch.optim.SGD(params, lr=0.1, momentum=0.9),
                                   named_parameters=named)
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in params)
        x, y = global_batch(step)
        loss = loss_fn(body, my_part(x), my_part(y))
        if hvd.rank() == 0:
            loss = loss + head_loss(head, x[:PER_RANK])
        loss.backward()
        opt.step()
    got = torch.cat([p.detach().reshape(-1) for p in params])
    assert_same_everywhere(got, "set_to_none")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all(p.grad is not None for p in head.parameters())
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in unused.parameters())
