"""torch.compile'd models (torch >= 2) training through dcomm.torch's
DistributedOptimizer and through DDP over the backend "dcomm": the loss
falls and every rank ends with the same parameters, bit for bit. The
compiled backward still feeds each parameter's AccumulateGrad, whose hooks
start the optimizer's allreduces; DDP's reducer sees the same gradients.
Backends: aot_eager (AOTAutograd's compiled backward, no code generation)
and inductor (generated C++; its first compile takes most of a minute here)."""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not hasattr(torch, "compile"):
    pytest.skip("torch %s has no torch.compile (torch >= 2)" % torch.__version__,
                allow_module_level=True)
import dcomm.torch as hvd  # noqa: E402

STEPS = 6
BACKENDS = ["aot_eager", "inductor"]


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist.init_process_group("dcomm")     # env:// under dlaunch
    yield
    dist.destroy_process_group()


def make_model():
    torch.manual_seed(3 + dist.get_rank())          # differs until broadcast
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def batch(step):
    """This rank's samples of the step's batch."""
    g = torch.Generator().manual_seed(1000 * step + dist.get_rank())
    x = torch.randn(16, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def train(model, opt, tag):
    """Runs the steps; returns the losses averaged over ranks and checks that
    every rank holds the same parameters."""
    losses = []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        x, y = batch(step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(hvd.allreduce(loss.detach(), name="compile.%s.loss.%d" % (tag, step)).item())
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = hvd.allgather(flat.unsqueeze(0), name="compile.%s.params" % tag)
    for r in range(dist.get_world_size()):
        assert torch.equal(gathered[r], flat), "rank %d's parameters differ (%s)" % (r, tag)
    assert losses[-1] < losses[0], "the loss did not fall: %r (%s)" % (losses, tag)
    return losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_model_through_distributed_optimizer(backend):
    model = make_model()
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9),
                                   named_parameters=model.named_parameters())
    compiled = torch.compile(model, backend=backend)
    train(compiled, opt, "opt." + backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_ddp_over_dcomm(backend):
    model = make_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)   # broadcasts rank 0's parameters
    opt = torch.optim.SGD(ddp.parameters(), lr=0.2, momentum=0.9)
    train(torch.compile(ddp, backend=backend), opt, "ddp." + backend)
