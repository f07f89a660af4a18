"""What the Horovod-API front ends (dcomm.torch, dcomm.tensorflow) share:
init with Horovod's arguments, and Horovod's build queries (mpi_built,
nccl_built, ...) answered for dcomm."""

import ctypes
import os

from . import _core, _lib
from ._core import add_process_set, cross_size, local_size, size
from ._lib import UnsupportedError


def init(comm=None, process_sets=None):
    """Joins the job (collective over all ranks). process_sets: ProcessSets to
    register. comm (an MPI communicator or rank list in Horovod) is not supported:
    dcomm's job is every rank that dlaunch/mpirun/srun started."""
    if comm is not None:
        raise UnsupportedError(_lib.ERR_UNSUPPORTED, "init(comm=...) is not supported; "
                               "use process sets for subsets of ranks", "init")
    _core.init()
    for ps in process_sets or ():
        if ps.process_set_id is None:
            add_process_set(ps)


def shutdown():
    _core.shutdown()


def _module_present(name):
    """Whether libdcomm-<name>.so is where libdcomm's loader looks for it
    (DCOMM_MODULE_PATH, then the directory holding libdcomm)."""
    dirs = [d for d in os.environ.get("DCOMM_MODULE_PATH", "").split(":") if d]
    dirs.append(os.path.dirname(_lib.LIBRARY_PATH))
    return any(d and os.path.exists(os.path.join(d, "libdcomm-%s.so" % name)) for d in dirs)


def _transport_allowed(name):
    spec = os.environ.get("DCOMM_TRANSPORTS", "")
    if not spec:
        return True
    items = spec.lstrip("^").split(",")
    return (name not in items) if spec.startswith("^") else (name in items)


def mpi_built():
    return _module_present("mpi")


def mpi_enabled():
    return mpi_built() and _transport_allowed("mpi")


def mpi_threads_supported():
    """dcomm's own calls are thread-safe; MPI's threading is the mpi module's concern."""
    return mpi_enabled()


def gloo_built():
    return False    # dcomm has no Gloo; its own shm/tcp transports take that place


gloo_enabled = gloo_built


def nccl_built():
    """As Horovod: the NCCL version number (e.g. 22304) when dcomm's nccl
    module is there and its libnccl loads, else 0."""
    if not _module_present("nccl"):
        return 0
    try:
        nccl = ctypes.CDLL("libnccl.so.2")
        version = ctypes.c_int()
        if nccl.ncclGetVersion(ctypes.byref(version)) != 0:
            return 0
    except (OSError, AttributeError):
        return 0
    return version.value


def cuda_built():
    return _module_present("cuda")


def rocm_built():
    return False


def ddl_built():
    return False


def ccl_built():
    return False


def is_homogeneous():
    """True when every host runs the same number of ranks."""
    return local_size() * cross_size() == size()
