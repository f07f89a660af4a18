"""dcomm's NumPy API: every collective and dtype against a NumPy reference."""

import numpy as np
import pytest

import dcomm
from refdata import SIZES, reference, unsigned, values

DTYPES = ["uint8", "int8", "int32", "int64", "float16", "float32", "float64"]
OPS = {"sum": dcomm.Sum, "avg": dcomm.Average, "min": dcomm.Min, "max": dcomm.Max,
       "prod": dcomm.Product}


def inputs(dtype, count, salt, op="sum"):
    return [unsigned(dtype, values(r, count, salt, op)) for r in range(dcomm.size())]


def check_close(got, want, dtype, op):
    if op == "avg" and np.dtype(dtype).kind == "f":
        tol = 1e-2 if dtype == "float16" else 1e-6
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(got, want.astype(dtype))


@pytest.mark.parametrize("count", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_allreduce(dtype, op, count):
    ins = inputs(dtype, count, "ar", op)
    mine = ins[dcomm.rank()].astype(dtype)
    want = reference(ins, op, np.dtype(dtype).kind != "f")
    got = dcomm.allreduce(mine, op=OPS[op], name="np.ar.%s.%s.%d" % (dtype, op, count))
    assert got.dtype == np.dtype(dtype) and got.shape == mine.shape
    check_close(got, want, dtype, op)
    # in place, asynchronously
    h = dcomm.allreduce_async_(mine, op=OPS[op], name="np.ar_.%s.%s.%d" % (dtype, op, count))
    while not dcomm.poll(h):
        pass
    assert dcomm.synchronize(h) is mine
    check_close(mine, want, dtype, op)


@pytest.mark.parametrize("dtype", DTYPES)
def test_allreduce_noncontiguous_and_scaling(dtype):
    ins = inputs(dtype, 24, "nc")
    mine = ins[dcomm.rank()].astype(dtype).reshape(4, 6)[:, ::2]     # a strided view
    want = reference([i.reshape(4, 6)[:, ::2] for i in ins], "sum", False)
    got = dcomm.allreduce(mine, name="np.nc." + dtype)
    np.testing.assert_array_equal(got, want.astype(dtype))
    if np.dtype(dtype).kind == "f":
        got = dcomm.allreduce(mine, name="np.sc." + dtype, prescale_factor=0.5,
                              postscale_factor=4.0)
        np.testing.assert_allclose(got.astype(np.float64), want * 2.0, rtol=1e-2)


@pytest.mark.parametrize("count", (0, 1, 5))
@pytest.mark.parametrize("dtype", DTYPES + ["bool", "int16", "complex64"])
def test_allgather(dtype, count):
    # rank r contributes count + r rows of 3 columns
    rows = [unsigned(dtype, values(r, (count + r) * 3, "ag")).reshape(-1, 3)
            for r in range(dcomm.size())]
    want = np.concatenate(rows).astype(dtype)
    got = dcomm.allgather(rows[dcomm.rank()].astype(dtype), name="np.ag.%s.%d" % (dtype, count))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("count", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast(dtype, count):
    for root in range(dcomm.size()):
        data = unsigned(dtype, values(root, count, "bc")).astype(dtype)
        mine = data if dcomm.rank() == root else np.zeros(count, dtype)
        got = dcomm.broadcast(mine, root, name="np.bc.%s.%d.%d" % (dtype, count, root))
        np.testing.assert_array_equal(got, data)
        dcomm.broadcast_(mine, root, name="np.bc_.%s.%d.%d" % (dtype, count, root))
        np.testing.assert_array_equal(mine, data)


def alltoall_splits(src, n):
    return [(src + dst) % 3 for dst in range(n)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_alltoall(dtype):
    n, me = dcomm.size(), dcomm.rank()
    # each row holds (source, destination, index) so misrouting shows
    def rows_of(src):
        out = []
        for dst, k in enumerate(alltoall_splits(src, n)):
            out += [[src, dst, i] for i in range(k)]
        return np.array(out, dtype=dtype).reshape(-1, 3)
    got, received = dcomm.alltoall(rows_of(me), splits=alltoall_splits(me, n),
                                   name="np.a2a." + dtype)
    want = np.concatenate([rows_of(src)[rows_of(src)[:, 1] == me] for src in range(n)])
    np.testing.assert_array_equal(got, want.reshape(-1, 3))
    assert list(received) == [alltoall_splits(src, n)[me] for src in range(n)]
    # equal splits by default
    got, received = dcomm.alltoall(np.full(2 * n, me, dtype=dtype), name="np.a2a.eq." + dtype)
    np.testing.assert_array_equal(got, np.repeat(np.arange(n), 2).astype(dtype))


@pytest.mark.parametrize("rows,cols", [(7, 1), (6, 2), (7, 2), (1, 3)])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reducescatter(dtype, op, rows, cols):
    n, me = dcomm.size(), dcomm.rank()
    ins = [i.reshape(rows, cols) for i in inputs(dtype, rows * cols, "rs", op)]
    full = reference(ins, op, np.dtype(dtype).kind != "f")
    first = me * (rows // n) + min(me, rows % n)
    mine = rows // n + (1 if me < rows % n else 0)
    got = dcomm.reducescatter(ins[me].astype(dtype), op=OPS[op],
                              name="np.rs.%s.%s.%d.%d" % (dtype, op, rows, cols))
    assert got.shape == (mine, cols)
    check_close(got, full[first:first + mine], dtype, op)


def test_grouped_allreduce_and_barrier():
    arrays = [np.full(k + 1, dcomm.rank() + k, np.float32) for k in range(4)]
    outs = dcomm.grouped_allreduce(arrays, op=dcomm.Max, name="np.grouped")
    for k, out in enumerate(outs):
        np.testing.assert_array_equal(out, np.full(k + 1, dcomm.size() - 1 + k, np.float32))
    dcomm.barrier()


def test_process_set():
    n = dcomm.size()
    members = [r for r in range(n) if r % 2 == 0]
    ps = dcomm.add_process_set(members)
    try:
        assert ps.size() == len(members)
        assert ps.included() == (dcomm.rank() in members)
        if ps.included():
            got = dcomm.allreduce(np.array([dcomm.rank()], np.int64), name="np.ps", process_set=ps)
            assert got[0] == sum(members)
            root = members[-1]
            got = dcomm.broadcast(np.array([dcomm.rank()]), root, name="np.ps.bc", process_set=ps)
            assert got[0] == root
        else:
            with pytest.raises(dcomm.DcommError):
                dcomm.allreduce(np.ones(1), name="np.ps.out", process_set=ps)
    finally:
        dcomm.barrier()
        assert dcomm.remove_process_set(ps)


def test_errors_are_exceptions():
    with pytest.raises(TypeError, match="not supported for reductions"):
        dcomm.allreduce(np.ones(3, dtype=np.int16), name="np.bad.dtype")
    with pytest.raises(NotImplementedError, match="Adasum"):
        dcomm.allreduce(np.ones(3), op=dcomm.Adasum, name="np.adasum")
    with pytest.raises(dcomm.DcommError, match="root"):
        dcomm.broadcast(np.ones(3), dcomm.size() + 5, name="np.bad.root")
    with pytest.raises(ValueError, match="not registered"):
        dcomm.allreduce(np.ones(3), op=dcomm.Average, process_set=dcomm.ProcessSet([0]))


def test_identity():
    assert 0 <= dcomm.rank() < dcomm.size()
    assert 0 <= dcomm.local_rank() < dcomm.local_size()
    assert 0 <= dcomm.cross_rank() < dcomm.cross_size()
    ranks = dcomm.allgather(np.array([dcomm.rank()]), name="np.ranks")
    assert list(ranks) == list(range(dcomm.size()))
