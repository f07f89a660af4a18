"""How torch.distributed and libdcomm find each other, whichever launched the job.

Under dlaunch, torch's env:// rendezvous lacks MASTER_ADDR/MASTER_PORT/RANK/
WORLD_SIZE: in exactly that case (it would fail otherwise) the env:// handler
is wrapped so that dcomm's own bootstrap carries rank 0's torch store address
to the others. Under torchrun (and any launcher that sets torch's variables),
torch's store is there and libdcomm is bootstrapped through it: the ranks
meet in a DCOMM_STORE_DIR that rank 0 creates and names in torch's store.
"""

import atexit
import datetime
import importlib
import os
import shutil
import socket
import tempfile

import numpy as np
import torch.distributed as dist

# The module (torch.distributed.rendezvous names a function of it too).
_torch_rdv = importlib.import_module("torch.distributed.rendezvous")

from .. import _core

_ADDR_BYTES = 256                 # rank 0's "host:port" as broadcast to the others
_STORE_DIR_KEY = "dcomm/store_dir"


def launched_by_dlaunch():
    return bool(os.environ.get("DCOMM_RANK")) and bool(os.environ.get("DCOMM_RENDEZVOUS"))


def _routable_address():
    """This host's address as the other hosts reach it: the one that routes to
    dlaunch's rendezvous server (no packet is sent), else the host name."""
    host = os.environ.get("DCOMM_RENDEZVOUS", "").rpartition(":")[0].strip("[]")
    if host:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((host, 9))
                addr = s.getsockname()[0]
                if not addr.startswith("127."):
                    return addr
        except OSError:
            pass
    return socket.gethostname()


def _broadcast_text(text, what):
    """text of rank 0 on every rank, through dcomm (initialized)."""
    buf = np.zeros(_ADDR_BYTES, dtype=np.uint8)
    if _core.rank() == 0:
        raw = text.encode()
        if len(raw) >= _ADDR_BYTES:
            raise RuntimeError("dcomm rendezvous: %s %r is longer than %d bytes"
                               % (what, text, _ADDR_BYTES - 1))
        buf[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    from .. import broadcast_
    broadcast_(buf, 0, name="torch.rendezvous." + what)
    return bytes(buf).split(b"\0", 1)[0].decode()


def _dlaunch_store(timeout):
    """(store, rank, size): a TCPStore served by rank 0 on a free port, its
    address told to the others by dcomm's broadcast."""
    if not _core.is_initialized():
        _core.init()
        atexit.register(_shutdown_at_exit)
    rank, size = _core.rank(), _core.size()
    store = None
    if rank == 0:
        host = "127.0.0.1" if _core.local_size() == size else _routable_address()
        store = dist.TCPStore(host, 0, size, True, timeout, wait_for_workers=False)
        where = "%s:%d" % (host, store.port)
    else:
        where = ""
    where = _broadcast_text(where, "master")
    host, _, port = where.rpartition(":")
    if store is None:
        store = dist.TCPStore(host, int(port), size, False, timeout)
    # What torchrun would have set, for code that reads them (not MASTER_*:
    # this store's server ends with the group, and a later init finds it here).
    for var, value in (("RANK", rank), ("WORLD_SIZE", size), ("LOCAL_RANK", _core.local_rank()),
                       ("LOCAL_WORLD_SIZE", _core.local_size())):
        os.environ.setdefault(var, str(value))
    return store, rank, size


def _wrap_env_handler(torch_env_handler):
    def env_handler(url, timeout=datetime.timedelta(minutes=30), **kwargs):
        if os.environ.get("MASTER_ADDR") or not launched_by_dlaunch():
            yield from torch_env_handler(url, timeout=timeout, **kwargs)
            return
        yield _dlaunch_store(timeout)
        raise RuntimeError("Unable to perform re-rendezvous using env:// method under dlaunch")
    env_handler.dcomm_wrapped = torch_env_handler
    return env_handler


def install_env_handler():
    """Lets init_process_group's default env:// work under dlaunch (any backend)."""
    handlers = _torch_rdv._rendezvous_handlers
    current = handlers.get("env")
    if current is not None and not hasattr(current, "dcomm_wrapped"):
        handlers["env"] = _wrap_env_handler(current)


def _remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


def _bootstrap_through_store(store, rank, size):
    """dcomm_init for a job that torch's store ties together (torchrun): the
    ranks meet in DCOMM_STORE_DIR, which must be one directory for all of them
    (a private temporary one on rank 0's host unless the user set it)."""
    shared = os.environ.get("DCOMM_STORE_DIR")
    if rank == 0:
        if not shared:
            shared = tempfile.mkdtemp(prefix="dcomm-torch-")     # mode 0700
            atexit.register(_remove_tree, shared)
        store.set(_STORE_DIR_KEY, shared)
    path = store.get(_STORE_DIR_KEY).decode()
    if not os.path.isdir(path):
        raise RuntimeError(
            "dcomm backend, rank %d: the rendezvous directory %s made by rank 0 is not on this "
            "host: libdcomm can bootstrap through torch's store only on one host; set "
            "DCOMM_STORE_DIR to a directory that every host shares, or start the job with "
            "dlaunch" % (rank, path))
    os.environ["DCOMM_STORE_DIR"] = path
    os.environ["DCOMM_RANK"] = str(rank)
    os.environ["DCOMM_SIZE"] = str(size)
    _core.init()


def _shutdown_at_exit():
    """The job's ranks leave together (a peer that vanishes mid-exchange is a
    failure to the others); the barrier fails rather than hangs when one died."""
    if not _core.is_initialized():
        return
    try:
        _core.barrier()
    except Exception:      # noqa: BLE001 -- exiting anyway; the peer's loss was reported
        pass
    _core.shutdown()


def init_runtime(store, rank, size):
    """Initializes libdcomm for the default process group (a no-op when it
    is already: then its owner shuts it down), and checks that it sees the
    same job as torch."""
    if not _core.is_initialized():
        if os.environ.get("DCOMM_RANK"):
            _core.init()
        else:
            _bootstrap_through_store(store, rank, size)
        atexit.register(_shutdown_at_exit)
    if (_core.rank(), _core.size()) != (rank, size):
        raise RuntimeError("dcomm backend: torch.distributed says rank %d of %d but dcomm's "
                           "launcher says rank %d of %d; start the job with one launcher"
                           % (rank, size, _core.rank(), _core.size()))
