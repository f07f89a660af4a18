"""dcomm.torch's collectives (horovod.torch's API): every op and dtype against
a torch reference, async forms, grouped forms, scaling, compression, autograd,
process sets, and the errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import dcomm.torch as hvd  # noqa: E402
from refdata import SIZES, reference, unsigned, values  # noqa: E402

DTYPES = [torch.uint8, torch.int8, torch.int32, torch.int64, torch.float16, torch.bfloat16,
          torch.float32, torch.float64]
OPS = {"sum": hvd.Sum, "avg": hvd.Average, "min": hvd.Min, "max": hvd.Max, "prod": hvd.Product}


def tname(dtype):
    return str(dtype).replace("torch.", "")


def rank_input(r, dtype, count, salt, op="sum"):
    return torch.from_numpy(unsigned(tname(dtype), values(r, count, salt, op))).to(dtype)


def ref(dtype, count, salt, op):
    ins = [unsigned(tname(dtype), values(r, count, salt, op)) for r in range(hvd.size())]
    return torch.from_numpy(reference(ins, op, not dtype.is_floating_point))


def assert_matches(got, want, dtype, op):
    assert got.dtype == dtype
    if op == "avg" and dtype.is_floating_point:
        tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    else:
        assert torch.equal(got, want.to(dtype)), (got, want)


def test_init_and_identity():
    hvd.init()          # a second init is a no-op, as in Horovod
    assert hvd.is_initialized()
    assert 0 <= hvd.rank() < hvd.size() and 0 <= hvd.local_rank() < hvd.local_size()
    assert 0 <= hvd.cross_rank() < hvd.cross_size()
    assert hvd.is_homogeneous()
    assert hvd.gloo_built() is False and hvd.rocm_built() is False and hvd.ddl_built() is False
    # the build queries answer from the module files next to the loaded libdcomm
    import os
    from dcomm import _lib
    libdir = os.path.dirname(_lib.LIBRARY_PATH)
    if "DCOMM_MODULE_PATH" not in os.environ:
        for name, query in (("mpi", hvd.mpi_built), ("nccl", hvd.nccl_built),
                            ("cuda", hvd.cuda_built)):
            assert bool(query()) == os.path.exists(os.path.join(libdir, "libdcomm-%s.so" % name))
        # as Horovod: nccl_built() is the NCCL version number, 0 without NCCL
        assert isinstance(hvd.nccl_built(), int) and hvd.nccl_built() != 1


@pytest.mark.parametrize("count", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=tname)
def test_allreduce(dtype, op, count):
    x = rank_input(hvd.rank(), dtype, count, "t.ar", op)
    want = ref(dtype, count, "t.ar", op)
    key = "%s.%s.%d" % (tname(dtype), op, count)
    assert_matches(hvd.allreduce(x, name="t.ar." + key, op=OPS[op]), want, dtype, op)
    h = hvd.allreduce_async(x, name="t.ara." + key, op=OPS[op])
    assert_matches(hvd.synchronize(h), want, dtype, op)
    y = x.clone()
    out = hvd.allreduce_(y, name="t.ar_." + key, op=OPS[op])
    assert out is y
    assert_matches(y, want, dtype, op)
    y = x.clone()
    h = hvd.allreduce_async_(y, name="t.ara_." + key, op=OPS[op])
    while not hvd.poll(h):
        pass
    hvd.synchronize(h)
    assert_matches(y, want, dtype, op)


def test_allreduce_average_flag_and_scaling():
    x = torch.full((5,), float(hvd.rank() + 1))
    total = float(sum(range(1, hvd.size() + 1)))
    assert torch.allclose(hvd.allreduce(x, average=False, name="t.avgflag"), torch.full((5,), total))
    got = hvd.allreduce(x, name="t.scale", op=hvd.Sum, prescale_factor=2.0, postscale_factor=0.25)
    assert torch.allclose(got, torch.full((5,), total * 0.5))
    xi = torch.full((3,), 10 * (hvd.rank() + 1), dtype=torch.int32)
    got = hvd.allreduce(xi, name="t.scale.int", op=hvd.Sum, postscale_factor=0.5)
    assert torch.equal(got, torch.full((3,), int(10 * total * 0.5), dtype=torch.int32))
    with pytest.raises(ValueError):
        hvd.allreduce(x, average=True, op=hvd.Sum)


def test_compression_fp16():
    x = torch.full((9,), 0.5 * (hvd.rank() + 1), dtype=torch.float32)
    got = hvd.allreduce(x, name="t.fp16", op=hvd.Sum, compression=hvd.Compression.fp16)
    assert got.dtype == torch.float32
    assert torch.allclose(got, torch.full((9,), 0.5 * sum(range(1, hvd.size() + 1))))
    t, ctx = hvd.Compression.fp16.compress(x)
    assert t.dtype == torch.float16 and hvd.Compression.fp16.decompress(t, ctx).dtype == torch.float32
    assert hvd.Compression.none.compress(x)[0] is x


@pytest.mark.parametrize("dtype", DTYPES, ids=tname)
def test_grouped_allreduce(dtype):
    xs = [rank_input(hvd.rank(), dtype, k * 3 + 1, "t.g%d" % k) for k in range(3)]
    wants = [ref(dtype, k * 3 + 1, "t.g%d" % k, "sum") for k in range(3)]
    for got, want in zip(hvd.grouped_allreduce(xs, name="t.g." + tname(dtype), op=hvd.Sum), wants):
        assert_matches(got, want, dtype, "sum")
    h = hvd.grouped_allreduce_async(xs, name="t.ga." + tname(dtype), op=hvd.Sum)
    for got, want in zip(hvd.synchronize(h), wants):
        assert_matches(got, want, dtype, "sum")
    ys = [x.clone() for x in xs]
    hvd.grouped_allreduce_(ys, name="t.g_." + tname(dtype), op=hvd.Sum)
    for y, want in zip(ys, wants):
        assert_matches(y, want, dtype, "sum")
    ys = [x.clone() for x in xs]
    hvd.synchronize(hvd.grouped_allreduce_async_(ys, name="t.ga_." + tname(dtype), op=hvd.Sum))
    for y, want in zip(ys, wants):
        assert_matches(y, want, dtype, "sum")


@pytest.mark.parametrize("dtype", DTYPES + [torch.bool, torch.int16], ids=tname)
def test_allgather(dtype):
    parts = [rank_input(r, dtype, (r + 1) * 4, "t.ag").reshape(-1, 2, 2) for r in range(hvd.size())]
    want = torch.cat(parts)
    assert torch.equal(hvd.allgather(parts[hvd.rank()], name="t.ag." + tname(dtype)), want)
    h = hvd.allgather_async(parts[hvd.rank()], name="t.aga." + tname(dtype))
    assert torch.equal(hvd.synchronize(h), want)
    outs = hvd.grouped_allgather([parts[hvd.rank()], parts[hvd.rank()][:1]],
                                 name="t.gag." + tname(dtype))
    assert torch.equal(outs[0], want) and torch.equal(outs[1], torch.cat([p[:1] for p in parts]))


@pytest.mark.parametrize("dtype", DTYPES + [torch.bool], ids=tname)
def test_broadcast(dtype):
    for root in range(hvd.size()):
        data = rank_input(root, dtype, 10, "t.bc").reshape(2, 5)
        x = data.clone() if hvd.rank() == root else torch.zeros(2, 5, dtype=dtype)
        key = "%s.%d" % (tname(dtype), root)
        assert torch.equal(hvd.broadcast(x, root, name="t.bc." + key), data)
        assert torch.equal(hvd.synchronize(hvd.broadcast_async(x, root, name="t.bca." + key)), data)
        y = x.clone()
        assert hvd.broadcast_(y, root, name="t.bc_." + key) is y and torch.equal(y, data)
        y = x.clone()
        hvd.synchronize(hvd.broadcast_async_(y, root, name="t.bca_." + key))
        assert torch.equal(y, data)


@pytest.mark.parametrize("dtype", DTYPES, ids=tname)
def test_alltoall(dtype):
    n, me = hvd.size(), hvd.rank()
    splits = [(me + d) % 3 for d in range(n)]
    rows = torch.tensor([[me, d] for d, k in enumerate(splits) for _ in range(k)],
                        dtype=torch.int64).reshape(-1, 2).to(dtype)
    out, received = hvd.alltoall(rows, splits=torch.tensor(splits, dtype=torch.int32),
                                 name="t.a2a." + tname(dtype))
    want_splits = [(src + me) % 3 for src in range(n)]
    assert received.tolist() == want_splits
    want = [[src, me] for src in range(n) for _ in range(want_splits[src])]
    assert out.to(torch.int64).reshape(-1, 2).tolist() == want
    out = hvd.alltoall(torch.full((n * 2,), me).to(dtype), name="t.a2a.eq." + tname(dtype))
    assert out.to(torch.int64).tolist() == [r for r in range(n) for _ in range(2)]
    out, received = hvd.synchronize(hvd.alltoall_async(rows, splits=splits,
                                                       name="t.a2aa." + tname(dtype)))
    assert received.tolist() == want_splits


@pytest.mark.parametrize("shape", [(7,), (6, 2), (7, 2)])
@pytest.mark.parametrize("op", ["sum", "avg", "max"])
@pytest.mark.parametrize("dtype", DTYPES, ids=tname)
def test_reducescatter(dtype, op, shape):
    n, me = hvd.size(), hvd.rank()
    count = int(np.prod(shape))
    x = rank_input(me, dtype, count, "t.rs", op).reshape(shape)
    full = ref(dtype, count, "t.rs", op).reshape(shape)
    first = me * (shape[0] // n) + min(me, shape[0] % n)
    mine = shape[0] // n + (1 if me < shape[0] % n else 0)
    key = "%s.%s.%s" % (tname(dtype), op, "x".join(map(str, shape)))
    got = hvd.reducescatter(x, name="t.rs." + key, op=OPS[op])
    assert_matches(got, full[first:first + mine], dtype, op)
    got = hvd.synchronize(hvd.reducescatter_async(x, name="t.rsa." + key, op=OPS[op]))
    assert_matches(got, full[first:first + mine], dtype, op)


def test_grouped_reducescatter():
    n = hvd.size()
    xs = [torch.ones(n * 2, 3), torch.full((n,), 2.0)]
    outs = hvd.grouped_reducescatter(xs, name="t.grs", op=hvd.Sum)
    assert torch.equal(outs[0], torch.full((2, 3), float(n)))
    assert torch.equal(outs[1], torch.full((1,), 2.0 * n))
    outs = hvd.synchronize(hvd.grouped_reducescatter_async(xs, name="t.grsa", op=hvd.Average))
    assert torch.equal(outs[1], torch.full((1,), 2.0))


def test_autograd():
    n, me = hvd.size(), hvd.rank()
    x = torch.full((4,), float(me + 1), requires_grad=True)
    y = hvd.allreduce(x, name="t.grad.ar", op=hvd.Sum)
    (y * (me + 1)).sum().backward()
    # d/dx_me sum_r (r+1) * sum_k x_k = sum_r (r+1): allreduce of the gradients
    assert torch.allclose(x.grad, torch.full((4,), float(sum(range(1, n + 1)))))

    x = torch.full((me + 1, 2), 1.0, requires_grad=True)
    g = hvd.allgather(x, name="t.grad.ag")
    weights = torch.arange(g.shape[0], dtype=torch.float32).unsqueeze(1)
    (g * weights).sum().backward()
    # every rank's loss weights row i by i; as Horovod, x's rows get the
    # output gradient averaged over the ranks: their row index
    first = sum(range(1, me + 1))
    want = torch.arange(first, first + me + 1, dtype=torch.float32).unsqueeze(1).expand(-1, 2)
    assert torch.allclose(x.grad, want)

    x = torch.ones(3, requires_grad=True)
    hvd.broadcast(x, 0, name="t.grad.bc").sum().backward()
    # as Horovod: the averaged gradient on the root, zeros elsewhere
    assert torch.allclose(x.grad, torch.full((3,), 1.0 if me == 0 else 0.0))

    x = torch.ones(2 * n, requires_grad=True)
    hvd.alltoall(x, name="t.grad.a2a").sum().backward()
    assert torch.allclose(x.grad, torch.ones(2 * n))

    x = torch.ones(n, 2, requires_grad=True)
    hvd.reducescatter(x, name="t.grad.rs", op=hvd.Sum).sum().backward()
    # as Horovod: a Sum's gradient is scaled by the set size, then allgathered
    assert torch.allclose(x.grad, torch.full((n, 2), float(n)))

    xs = [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)]
    outs = hvd.grouped_allreduce(xs, name="t.grad.g", op=hvd.Average)
    (outs[0].sum() + 2 * outs[1].sum()).backward()
    assert torch.allclose(xs[0].grad, torch.ones(2)) and torch.allclose(xs[1].grad, 2 * torch.ones(3))


def test_process_sets():
    n, me = hvd.size(), hvd.rank()
    if n < 2:
        pytest.skip("process sets of odd ranks need two ranks")
    odd = hvd.add_process_set(hvd.ProcessSet([r for r in range(n) if r % 2]))
    low = hvd.add_process_set([0, 1] if n > 1 else [0])
    try:
        if odd.included():
            got = hvd.allreduce(torch.tensor([float(me)]), name="t.ps.odd", op=hvd.Sum,
                                process_set=odd)
            assert got.item() == sum(r for r in range(n) if r % 2)
            assert torch.equal(hvd.allgather(torch.tensor([me]), process_set=odd, name="t.ps.ag"),
                               torch.tensor(odd.ranks))
        if low.included():
            got = hvd.broadcast(torch.tensor([me]), low.ranks[-1], name="t.ps.bc", process_set=low)
            assert got.item() == low.ranks[-1]
            hvd.barrier(process_set=low)
        hvd.barrier()
    finally:
        assert hvd.remove_process_set(odd) and hvd.remove_process_set(low)
    assert not hvd.remove_process_set(hvd.global_process_set)


def test_objects_and_parameters():
    me = hvd.rank()
    obj = hvd.broadcast_object({"rank": me, "t": torch.arange(3) + me}, root_rank=0,
                               name="t.obj")
    assert obj["rank"] == 0 and torch.equal(obj["t"], torch.arange(3))
    gathered = hvd.allgather_object(("r", me, "x" * me), name="t.objs")
    assert gathered == [("r", r, "x" * r) for r in range(hvd.size())]

    torch.manual_seed(me)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(hvd.broadcast(flat, 0, name="t.params.check"), flat)

    opt = torch.optim.Adam(model.parameters(), lr=0.01 * (me + 1))
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    avg = opt.state_dict()["state"][0]["exp_avg"].reshape(-1)
    assert torch.equal(hvd.broadcast(avg, 0, name="t.optstate.check"), avg)


def test_errors():
    with pytest.raises(NotImplementedError, match="Adasum"):
        hvd.allreduce(torch.ones(2), op=hvd.Adasum)
    with pytest.raises(TypeError, match="not supported"):
        hvd.allreduce(torch.ones(2, dtype=torch.int16), name="t.err.dtype")
    with pytest.raises(hvd.HorovodInternalError, match="root"):
        hvd.broadcast_(torch.ones(2), hvd.size() + 3, name="t.err.root")
    with pytest.raises(ValueError, match="splits"):
        hvd.alltoall(torch.ones(3), splits=[5] * hvd.size(), name="t.err.splits")
    assert issubclass(hvd.HorovodInternalError, RuntimeError)


def test_dropped_handle_and_duplicate_name():
    # A dropped handle's op still runs; its name stays taken until a later
    # submission finds it done (deterministic, whatever the runtime's speed).
    import gc
    n = hvd.size()
    hvd.allreduce_async(torch.ones(3), name="t.dup", op=hvd.Sum)
    gc.collect()
    with pytest.raises(ValueError) as err:
        hvd.allreduce_async(torch.ones(3), name="t.dup", op=hvd.Sum)
    assert isinstance(err.value, hvd.DcommError) and "t.dup" in str(err.value)
    hvd.barrier()                      # does not wait for the dropped op
    got = hvd.allreduce(torch.ones(2), name="t.after.dup", op=hvd.Sum)
    assert torch.equal(got, torch.full((2,), float(n)))
    got = hvd.allreduce(torch.ones(3), name="t.dup", op=hvd.Sum)   # free again
    assert torch.equal(got, torch.full((3,), float(n)))


def test_reinit_lives():
    # init -> shutdown -> init, with a process set re-registered each life
    n = hvd.size()
    ps = hvd.ProcessSet(list(range(n)))
    hvd.add_process_set(ps)
    stale = hvd.allreduce_async(torch.ones(1), name="t.life.stale", op=hvd.Sum)
    hvd.synchronize(stale)
    for life in range(2):
        hvd.barrier()
        hvd.shutdown()
        assert not hvd.is_initialized() and ps.process_set_id is None
        hvd.init(process_sets=[ps])
        got = hvd.allreduce(torch.ones(2), name="t.life", op=hvd.Sum, process_set=ps)
        assert torch.equal(got, torch.full((2,), float(n)))
    hvd.remove_process_set(ps)
    try:
        late = hvd.allreduce_async(torch.ones(1), name="t.life.late", op=hvd.Sum)
    except hvd.DcommError as err:
        # A peer's shutdown came first: it stopped this rank's coordinator too,
        # and a submission after that fails at once, naming that rank (as in
        # Horovod, whose enqueue returns SHUT_DOWN_ERROR).
        assert "called dcomm_shutdown" in str(err), err
        late = None
    hvd.shutdown()
    hvd.init()
    if late is not None:
        with pytest.raises(hvd.DcommError):    # a handle of an earlier life is void
            hvd.synchronize(late)
