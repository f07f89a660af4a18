"""The torch.distributed backend "dcomm": every op against a reference built
from every rank's (deterministic) input, async Works and futures, sub-groups,
errors, DistributedSampler, and DDP over dcomm against DDP over gloo."""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("this torch has no torch.distributed", allow_module_level=True)
import dcomm  # noqa: E402
import dcomm.torch  # noqa: E402,F401 -- registers the backend
from refdata import SIZES, reference, unsigned, values  # noqa: E402

DTYPES = [torch.uint8, torch.int8, torch.int32, torch.int64, torch.float16, torch.bfloat16,
          torch.float32, torch.float64]
# torch >= 2 hands back its own Work around the backend's, whose is_completed()
# is the C++ base's (its trampoline for Python Works forwards only wait() and
# get_future()): there, only those two say when an op is done.
TORCH_WRAPS_WORK = int(torch.__version__.split(".")[0]) >= 2
OPS = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "min": dist.ReduceOp.MIN,
       "max": dist.ReduceOp.MAX, "prod": dist.ReduceOp.PRODUCT}


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist.init_process_group("dcomm")     # env:// under dlaunch
    yield
    dist.destroy_process_group()


def rank():
    return dist.get_rank()


def size():
    return dist.get_world_size()


def tname(dtype):
    return str(dtype).replace("torch.", "")


def rank_input(r, dtype, count, salt, op="sum"):
    return torch.from_numpy(unsigned(tname(dtype), values(r, count, salt, op))).to(dtype)


def all_inputs(dtype, count, salt, op="sum"):
    return [rank_input(r, dtype, count, salt, op) for r in range(size())]


def assert_reduced(got, dtype, count, salt, op):
    ins = [unsigned(tname(dtype), values(r, count, salt, op)) for r in range(size())]
    want = torch.from_numpy(reference(ins, op, not dtype.is_floating_point))
    assert got.dtype == dtype
    if op == "avg":
        tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    else:
        assert torch.equal(got, want.to(dtype)), (got, want)


def test_backend_and_identity():
    assert dist.get_backend() == "dcomm"
    assert (rank(), size()) == (dcomm.rank(), dcomm.size())
    group = dist.distributed_c10d._get_default_group()
    if hasattr(group, "_get_backend"):         # torch 2.x: its ProcessGroup wraps ours
        group = group._get_backend(torch.device("cpu"))
    assert type(group).__name__ == "ProcessGroupDcomm"


@pytest.mark.parametrize("count", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=tname)
def test_all_reduce(dtype, op, count):
    if op == "avg" and not dtype.is_floating_point:
        pytest.skip("torch's AVG is for floating types")
    x = rank_input(rank(), dtype, count, "b.ar", op)
    y = x.clone()
    dist.all_reduce(y, op=OPS[op])
    assert_reduced(y, dtype, count, "b.ar", op)
    y = x.clone()
    work = dist.all_reduce(y, op=OPS[op], async_op=True)
    assert work.wait()
    assert work.get_future().done()
    if not TORCH_WRAPS_WORK:
        assert work.is_completed()
    assert torch.equal(work.get_future().value()[0], y)
    assert_reduced(y, dtype, count, "b.ar", op)


def test_all_reduce_non_contiguous_and_complex():
    base = rank_input(rank(), torch.float64, 24, "b.nc").reshape(4, 6)
    view = base.clone().t()                       # not contiguous
    dist.all_reduce(view)
    want = sum(rank_input(r, torch.float64, 24, "b.nc").reshape(4, 6) for r in range(size()))
    assert torch.equal(view, want.t())
    z = torch.complex(base, -base)
    dist.all_reduce(z)
    assert torch.equal(z, torch.complex(want, -want))


def test_outputs_that_require_grad():
    """Parameters are broadcast and gathered into (DDP, ZeRO): no autograd error."""
    want = rank_input(0, torch.float32, 12, "b.rg").reshape(3, 4).t()
    p = torch.nn.Parameter(rank_input(rank(), torch.float32, 12, "b.rg").reshape(3, 4).t())
    assert not p.is_contiguous()
    dist.broadcast(p, src=0)
    assert torch.equal(p.detach(), want)
    out = torch.nn.Parameter(torch.zeros(2 * size()))
    dist.all_gather_into_tensor(out, torch.full((2,), float(rank())))
    assert torch.equal(out.detach(), torch.arange(size()).repeat_interleave(2).float())


def test_ops_overlap_and_futures():
    """Several ops in flight at once, waited in reverse order; then() on a future."""
    xs = [rank_input(rank(), torch.float32, n, "b.ov%d" % n) for n in (1000, 7, 100000, 1)]
    works = [dist.all_reduce(x, async_op=True) for x in xs]
    chained = works[0].get_future().then(lambda fut: fut.value()[0] * 2)
    for w in reversed(works):
        w.wait()
    for x, n in zip(xs, (1000, 7, 100000, 1)):
        assert_reduced(x, torch.float32, n, "b.ov%d" % n, "sum")
    torch.testing.assert_close(chained.wait(), xs[0] * 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.complex64],
                         ids=tname)
def test_broadcast(dtype):
    for root in range(size()):
        x = rank_input(rank(), torch.float64, 37, "b.bc").to(dtype)
        dist.broadcast(x, src=root)
        assert torch.equal(x, rank_input(root, torch.float64, 37, "b.bc").to(dtype))


@pytest.mark.parametrize("uneven", [False, True], ids=["equal", "uneven"])
def test_all_gather(uneven):
    n = (lambda r: r + 1) if uneven else (lambda r: 5)
    x = rank_input(rank(), torch.float32, n(rank()), "b.ag")
    outs = [torch.empty(n(r)) for r in range(size())]
    dist.all_gather(outs, x)
    for r in range(size()):
        assert torch.equal(outs[r], rank_input(r, torch.float32, n(r), "b.ag"))


def test_all_gather_into_tensor():
    x = rank_input(rank(), torch.int32, 6, "b.agt").reshape(2, 3)
    want = torch.cat([rank_input(r, torch.int32, 6, "b.agt").reshape(2, 3)
                      for r in range(size())])
    out = torch.empty(2 * size(), 3, dtype=torch.int32)
    dist.all_gather_into_tensor(out, x)
    assert torch.equal(out, want)
    out2 = torch.empty(2 * size(), 3, dtype=torch.int32)
    with pytest.warns((UserWarning, FutureWarning)):   # deprecated: 1.13 and 2.x say so differently
        dist._all_gather_base(out2, x)
    assert torch.equal(out2, want)


@pytest.mark.parametrize("op", ["sum", "avg", "max"])
def test_reduce_scatter(op):
    per = 4
    x = rank_input(rank(), torch.float64, per * size(), "b.rs", op)
    full = reference([values(r, per * size(), "b.rs", op) for r in range(size())], op, False)
    mine = torch.from_numpy(full[rank() * per:(rank() + 1) * per])
    out = torch.empty(per, dtype=torch.float64)
    dist.reduce_scatter(out, list(x.split(per)), op=OPS[op])
    torch.testing.assert_close(out, mine)
    out2 = torch.empty(per, dtype=torch.float64)
    dist.reduce_scatter_tensor(out2, x, op=OPS[op])
    torch.testing.assert_close(out2, mine)
    out3 = torch.empty(per, dtype=torch.float64)
    with pytest.warns((UserWarning, FutureWarning)):   # deprecated: 1.13 and 2.x say so differently
        dist._reduce_scatter_base(out3, x, op=OPS[op])
    torch.testing.assert_close(out3, mine)


def test_all_to_all_single_equal():
    n = size()
    x = torch.arange(3 * n, dtype=torch.float32).reshape(n, 3) + 100 * rank()
    out = torch.empty(n, 3)
    dist.all_to_all_single(out, x)
    want = torch.stack([torch.arange(3.0) + 3 * rank() + 100 * r for r in range(n)])
    assert torch.equal(out, want)


def test_all_to_all_single_uneven():
    # rank r sends s + r + 1 rows to rank s (row values say who sent them to whom)
    n = size()
    send = [s + rank() + 1 for s in range(n)]
    recv = [rank() + r + 1 for r in range(n)]
    x = torch.cat([torch.full((k, 2), 10.0 * rank() + s) for s, k in enumerate(send)])
    out = torch.empty(sum(recv), 2)
    dist.all_to_all_single(out, x, output_split_sizes=recv, input_split_sizes=send)
    want = torch.cat([torch.full((k, 2), 10.0 * r + rank()) for r, k in enumerate(recv)])
    assert torch.equal(out, want)


def test_all_to_all_list_uneven():
    n = size()
    ins = [torch.full((s + 1 + rank(),), float(rank() * 10 + s)) for s in range(n)]
    outs = [torch.empty(rank() + 1 + r) for r in range(n)]
    dist.all_to_all(outs, ins)
    for r in range(n):
        assert torch.equal(outs[r], torch.full((rank() + 1 + r,), float(r * 10 + rank())))


def test_barrier_reduce_gather_scatter():
    dist.barrier()
    dst = size() - 1
    x = rank_input(rank(), torch.float32, 9, "b.red")
    dist.reduce(x, dst=dst)
    if rank() == dst:
        assert_reduced(x, torch.float32, 9, "b.red", "sum")
    else:
        assert torch.equal(x, rank_input(rank(), torch.float32, 9, "b.red"))
    mine = torch.full((3,), float(rank()))
    outs = [torch.empty(3) for _ in range(size())] if rank() == 0 else None
    dist.gather(mine, outs, dst=0)
    if rank() == 0:
        assert all(torch.equal(o, torch.full((3,), float(r))) for r, o in enumerate(outs))
    got = torch.empty(2)
    parts = [torch.full((2,), 7.0 + r) for r in range(size())] if rank() == 1 else None
    dist.scatter(got, parts, src=1)
    assert torch.equal(got, torch.full((2,), 7.0 + rank()))


def test_objects():
    objs = [None] * size()
    dist.all_gather_object(objs, {"rank": rank()})
    assert objs == [{"rank": r} for r in range(size())]
    box = [{"hello": rank()}]
    dist.broadcast_object_list(box, src=0)
    assert box == [{"hello": 0}]


def test_new_group_through_process_sets():
    members = [0, size() - 1]
    group = dcomm.torch.new_group(members)
    x = torch.full((4,), float(rank() + 1))
    if rank() in members:
        dist.all_reduce(x, group=group)
        assert torch.equal(x, torch.full((4,), float(1 + size())))
        y = torch.full((2,), float(rank()))
        dist.broadcast(y, src=size() - 1, group=group)     # a global rank, as torch takes
        assert torch.equal(y, torch.full((2,), float(size() - 1)))
    else:
        assert group == dist.GroupMember.NON_GROUP_MEMBER
    everyone = dist.new_group()          # all ranks: torch's own new_group suffices
    z = torch.ones(3)
    dist.all_reduce(z, group=everyone)
    assert torch.equal(z, torch.full((3,), float(size())))


@pytest.mark.skipif("dcomm.size() < 3")
def test_new_group_alone_fails_clearly():
    group = dist.new_group([0, 1])           # torch asks only ranks 0 and 1 to create it
    if rank() in (0, 1):
        with pytest.raises(RuntimeError, match="dcomm.torch.new_group"):
            dist.all_reduce(torch.ones(2), group=group)


def test_point_to_point_not_supported():
    with pytest.raises(NotImplementedError, match="send is not supported"):
        dist.send(torch.ones(1), dst=(rank() + 1) % size())
    with pytest.raises(NotImplementedError, match="recv is not supported"):
        dist.recv(torch.ones(1), src=(rank() + 1) % size())


def test_errors_name_rank_and_cause():
    with pytest.raises(RuntimeError, match=r"rank %d.*BAND" % rank()):
        dist.all_reduce(torch.ones(2, dtype=torch.int32), op=dist.ReduceOp.BAND)
    # same element count, different shapes: the negotiation names the mismatch
    x = torch.ones(2, 3) if rank() == 0 else torch.ones(3, 2)
    work = dist.all_reduce(x, async_op=True)
    with pytest.raises(RuntimeError, match=r"dcomm backend, rank %d: allreduce failed: "
                                           r".*MISMATCH" % rank()):
        work.wait()
    # different element counts
    with pytest.raises(RuntimeError, match="MISMATCH"):
        dist.all_reduce(torch.ones(4 + rank()))
    # the group goes on
    y = torch.ones(5)
    dist.all_reduce(y)
    assert torch.equal(y, torch.full((5,), float(size())))


def test_distributed_sampler():
    from torch.utils.data import DistributedSampler
    data = list(range(23))
    sampler = DistributedSampler(data, shuffle=True, seed=3)
    sampler.set_epoch(1)
    mine = torch.tensor(list(sampler))
    assert sampler.num_replicas == size() and sampler.rank == rank()
    everyone = [torch.empty_like(mine) for _ in range(size())]
    dist.all_gather(everyone, mine)
    seen = torch.cat(everyone).tolist()
    # the ranks' parts (padded to equal length) cover the data set
    assert set(seen) == set(data) and len(seen) == len(mine) * size()
    assert len(seen) - len(data) < size()


# ---- DDP: dcomm against gloo ----------------------------------------------------------

EPOCHS = 3


def train_ddp(group, data, targets):
    """Fixed-seed tiny run: the same initial weights and batches for every group."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group,
                                                    bucket_cap_mb=0.002)   # several buckets
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    dataset = TensorDataset(data, targets)
    sampler = DistributedSampler(dataset, num_replicas=size(), rank=rank(), shuffle=True, seed=5)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler)
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_ddp_matches_gloo():
    g = torch.Generator().manual_seed(11)
    data = torch.randn(96, 10, generator=g)
    targets = torch.randint(0, 4, (96,), generator=g)
    gloo = dist.new_group(backend="gloo")
    with_gloo = train_ddp(gloo, data, targets)
    with_dcomm = train_ddp(None, data, targets)          # the default group: dcomm
    # Every rank ends with the same weights, and dcomm's equal gloo's within float
    # rounding (the ranks' gradients summed in another order at 3 ranks).
    same = [torch.empty_like(with_dcomm) for _ in range(size())]
    dist.all_gather(same, with_dcomm)
    assert all(torch.equal(s, with_dcomm) for s in same)
    torch.testing.assert_close(with_dcomm, with_gloo, rtol=1e-5, atol=1e-6)
    if size() == 2:     # a + b == b + a: the same bits as gloo
        assert torch.equal(with_dcomm, with_gloo)


def test_zero_redundancy_optimizer():
    from torch.distributed.optim import ZeroRedundancyOptimizer
    torch.manual_seed(3)
    model = torch.nn.Linear(6, 5)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=torch.optim.Adam, lr=0.01)
    for step in range(3):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(step * 10 + rank()))
        opt.zero_grad()
        ddp(x).pow(2).sum().backward()
        opt.step()
    w = model.weight.detach().clone()
    ws = [torch.empty_like(w) for _ in range(size())]
    dist.all_gather(ws, w)
    assert all(torch.equal(v, w) for v in ws)
