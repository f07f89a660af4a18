"""Errors that involve every rank (mismatched tensors), join with uneven data,
and the timeline."""

import json
import os

import numpy as np
import pytest

import dcomm

torch = pytest.importorskip("torch")
import dcomm.torch as hvd  # noqa: E402


def test_mismatched_shapes_raise_on_every_rank_naming_the_tensor():
    if dcomm.size() < 2:
        pytest.skip("a mismatch needs two ranks")
    me = dcomm.rank()
    with pytest.raises(dcomm.DcommError) as info:
        dcomm.allreduce(np.ones(me + 2), name="mismatch.numpy.grad")
    assert "mismatch.numpy.grad" in str(info.value)
    assert info.value.status_name == "ERR_MISMATCH"
    with pytest.raises(hvd.HorovodInternalError) as info:
        hvd.allreduce(torch.ones(2, me + 1), name="mismatch.torch.weight")
    assert "mismatch.torch.weight" in str(info.value)
    with pytest.raises(hvd.HorovodInternalError, match="mismatch.torch.bcast"):
        hvd.broadcast_(torch.ones(3 + me), 0, name="mismatch.torch.bcast")
    # dtype mismatch too
    dtype = torch.float32 if me == 0 else torch.float64
    with pytest.raises(hvd.HorovodInternalError, match="mismatch.torch.dtype"):
        hvd.allreduce(torch.ones(4, dtype=dtype), name="mismatch.torch.dtype")
    # allgather of rows of different widths (2 elements on rank 0, 3 elsewhere):
    # every rank sees a count that is not whole rows of its own width
    with pytest.raises(dcomm.DcommError, match="mismatch.ag"):
        dcomm.allgather(np.ones((1, 2 if me == 0 else 3)), name="mismatch.ag")
    # later collectives work
    got = hvd.allreduce(torch.ones(3), name="after.mismatch", op=hvd.Sum)
    assert torch.equal(got, torch.full((3,), float(dcomm.size())))


def _join_available():
    """join() with every rank even: raises UnsupportedError everywhere when the
    library does not implement it yet (then nothing is left in flight)."""
    try:
        hvd.join()
        return True
    except hvd.UnsupportedError:
        return False


@pytest.fixture(scope="module")
def join_ok():
    if not _join_available():
        pytest.skip("dcomm_join_async returns DCOMM_ERR_UNSUPPORTED in this libdcomm")


def test_join_uneven_allreduce(join_ok):
    n, me = hvd.size(), hvd.rank()
    for step in range(me + 1):          # rank r has r + 1 batches
        got = hvd.allreduce(torch.full((4,), float(me + 1)), name="join.step.%d" % step,
                            op=hvd.Sum)
        active = [r for r in range(n) if r >= step]     # joined ranks add zeros
        assert torch.equal(got, torch.full((4,), float(sum(r + 1 for r in active))))
    assert hvd.join() == n - 1          # the rank with the most data joins last


def test_join_with_distributed_optimizer(join_ok):
    n, me = hvd.size(), hvd.rank()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters(), op=hvd.Sum)
    for step in range(2 + me):          # rank r has 2 + r batches
        opt.zero_grad()
        model(torch.ones(2, 3)).sum().backward()     # gradient 2 for every parameter
        opt.step()
    last = hvd.join()
    assert last == n - 1
    # Ranks that joined early stopped updating; as in Horovod, take the last
    # rank's parameters. At step k the ranks still training are those with
    # 2 + r > k, and the joined ones added zeros to the gradient sum.
    hvd.broadcast_parameters(model.state_dict(), root_rank=last)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    active = [sum(1 for r in range(n) if 2 + r > k) for k in range(n + 1)]
    torch.testing.assert_close(flat, start - 0.1 * 2.0 * sum(active))
    gathered = hvd.allgather(flat.unsqueeze(0), name="join.params")
    assert all(torch.equal(gathered[r], flat) for r in range(n))


def test_timeline(tmp_path_factory):
    path = os.path.join("/tmp", "dcomm-pytest-timeline-%d.json" % os.getppid())
    try:
        hvd.start_timeline(path)
    except hvd.UnsupportedError:
        pytest.skip("dcomm_timeline_start returns DCOMM_ERR_UNSUPPORTED in this libdcomm")
    hvd.allreduce(torch.ones(8), name="timeline.tensor")
    hvd.stop_timeline()
    hvd.barrier()
    if hvd.rank() == 0:
        with open(path) as f:
            text = f.read()
        assert "timeline.tensor" in text
        json.loads(text if text.rstrip().endswith("]") else text.rstrip().rstrip(",") + "]")
    hvd.barrier()
    if hvd.rank() == 0:
        os.unlink(path)
