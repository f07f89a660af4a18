"""The "dcomm" backend under torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) without dlaunch:
libdcomm must bootstrap through torch's store. Starts -np workers itself, as
torchrun would (Debian's torchrun 1.13 fails under Python 3.11 before it starts
any), and fails unless every one of them passes within the deadline.

    python3 torchrun_env.py -np 3
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

DEADLINE_S = 240


def worker():
    import torch
    import torch.distributed as dist
    import dcomm
    import dcomm.torch

    dist.init_process_group("dcomm")
    rank, size = dist.get_rank(), dist.get_world_size()
    assert (rank, size) == (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    assert (dcomm.rank(), dcomm.size()) == (rank, size), (dcomm.rank(), dcomm.size())
    assert dcomm.local_rank() == int(os.environ["LOCAL_RANK"])
    # rank 0's private rendezvous directory, named to the others in torch's store
    assert os.environ["DCOMM_STORE_DIR"].startswith(os.path.join(tempfile.gettempdir(),
                                                                 "dcomm-torch-"))
    x = torch.full((1000,), float(rank + 1))
    dist.all_reduce(x)
    assert torch.equal(x, torch.full((1000,), size * (size + 1) / 2.0))
    group = dcomm.torch.new_group([0, size - 1])
    if rank in (0, size - 1):
        y = torch.ones(3)
        dist.all_reduce(y, group=group)
        assert torch.equal(y, torch.full((3,), float(min(2, size))))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    for step in range(3):
        model(torch.randn(5, 4)).sum().backward()
    grads = [torch.empty_like(model.module.weight.grad) for _ in range(size)]
    dist.all_gather(grads, model.module.weight.grad)
    assert all(torch.equal(g, grads[0]) for g in grads)
    dist.destroy_process_group()
    print("rank %d of %d: ok" % (rank, size))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(np):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DCOMM_", "HOROVOD_"))}
    for keep in ("DCOMM_LIBRARY", "DCOMM_LOG_LEVEL"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    env.update(WORLD_SIZE=str(np), LOCAL_WORLD_SIZE=str(np), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()))
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(np)]
    end = time.monotonic() + DEADLINE_S
    failed = False
    for r, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, _ = p.communicate()
            print("rank %d: still running after %d s, killed" % (r, DEADLINE_S))
        if p.returncode != 0:
            failed = True
        print("".join("[%d] %s\n" % (r, line) for line in out.splitlines()), end="")
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-np", type=int, default=2)
    p.add_argument("--worker", action="store_true")
    a = p.parse_args()
    try:
        import torch.distributed as dist
    except ImportError:
        print("skipped: no torch")
        return 77
    if not dist.is_available():
        print("skipped: this torch has no torch.distributed")
        return 77
    if a.worker:
        worker()
        return 0
    return launch(a.np)


if __name__ == "__main__":
    sys.exit(main())
