"""Loads libdcomm and declares its C ABI (include/dcomm.h) for ctypes.

The library is looked for, in order: the path in DCOMM_LIBRARY, the one a
wheel bundles (dcomm/lib/, with the modules, dlaunch and dcomm-info in
dcomm/bin/; pip install of the repository root), a libdcomm.so* copied next to
this package, then the system loader (ld.so.cache, LD_LIBRARY_PATH). The
library's dcomm_version() must be this package's version, else importing
fails saying which of the two to replace. Every failing call becomes a
DcommError that carries the status and dcomm_last_error(), read on the
calling thread.
"""

import ctypes
import ctypes.util
import glob
import os

from ._version import __version__

# Status codes of dcomm_status_t (DCOMM_STATUS_MAP in dcomm.h).
STATUS_NAMES = {
    0: "OK", 1: "INPROGRESS", -1: "ERR_INVALID_ARG", -2: "ERR_NOT_INITIALIZED",
    -3: "ERR_MISMATCH", -4: "ERR_DUPLICATE_NAME", -5: "ERR_PEER_LOST", -6: "ERR_TIMEOUT",
    -7: "ERR_TRANSPORT", -8: "ERR_NO_MEMORY", -9: "ERR_UNSUPPORTED", -10: "ERR_SHUT_DOWN",
    -11: "ERR_AUTH", -12: "ERR_INTERNAL",
}
ERR_UNSUPPORTED = -9

# dcomm_dtype_t
UINT8, INT8, INT32, INT64, FLOAT16, BFLOAT16, FLOAT32, FLOAT64 = range(8)
DTYPE_NAMES = ["uint8", "int8", "int32", "int64", "float16", "bfloat16", "float32", "float64"]
DTYPE_SIZES = [1, 1, 4, 8, 2, 2, 4, 8]
FLOATING = frozenset((FLOAT16, BFLOAT16, FLOAT32, FLOAT64))


class DcommError(RuntimeError):
    """A dcomm call failed. status: the dcomm_status_t value; status_name: its
    name (e.g. 'ERR_MISMATCH'); message: dcomm_last_error() of that call."""

    def __init__(self, status, message, call=None):
        self.status = status
        self.status_name = STATUS_NAMES.get(status, "status %d" % status)
        self.message = message
        self.call = call
        where = "%s: " % call if call else ""
        super().__init__("%sDCOMM_%s: %s" % (where, self.status_name, message))


class UnsupportedError(DcommError, NotImplementedError):
    """DCOMM_ERR_UNSUPPORTED, or a feature this binding does not offer."""


class DuplicateNameError(DcommError, ValueError):
    """DCOMM_ERR_DUPLICATE_NAME: a tensor of that name is already in flight
    (a ValueError, as Horovod raises)."""


ERR_DUPLICATE_NAME = -4
ERR_SHUT_DOWN = -10
_ERROR_CLASSES = {ERR_UNSUPPORTED: UnsupportedError, ERR_DUPLICATE_NAME: DuplicateNameError}


def _candidates():
    env = os.environ.get("DCOMM_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for where in (os.path.join(here, "lib"), here):
        yield from sorted(glob.glob(os.path.join(where, "libdcomm.so*")))
    found = ctypes.util.find_library("dcomm")
    if found:
        yield found
    yield "libdcomm.so.0"
    yield "libdcomm.so"


def _load():
    errors = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            errors.append("%s: %s" % (path, exc))
    raise ImportError("dcomm: cannot load libdcomm (set DCOMM_LIBRARY to its path, e.g. "
                      "DCOMM_LIBRARY=build/libdcomm.so); tried: " + "; ".join(errors))


def _loaded_path(name):
    """The file the loader chose for libdcomm (a bare soname resolves through
    ld.so's search), from /proc/self/maps; name itself when not found there."""
    base = os.path.basename(name).split(".so")[0] + ".so"
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(None, 5)[-1].strip()
                if os.path.basename(path).startswith(base):
                    return path
    except OSError:
        pass
    return name


lib = _load()
LIBRARY_PATH = _loaded_path(lib._name)

_c_int_p = ctypes.POINTER(ctypes.c_int)
_size_p = ctypes.POINTER(ctypes.c_size_t)
_handle_p = ctypes.POINTER(ctypes.c_uint64)
_i32, _int, _u64, _sz, _vp, _cp = (ctypes.c_int32, ctypes.c_int, ctypes.c_uint64,
                                   ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p)

# name: (restype, argtypes)
_PROTOTYPES = {
    "dcomm_init": (_int, []),
    "dcomm_shutdown": (_int, []),
    "dcomm_is_initialized": (_int, []),
    "dcomm_rank": (_int, []),
    "dcomm_size": (_int, []),
    "dcomm_local_rank": (_int, []),
    "dcomm_local_size": (_int, []),
    "dcomm_cross_rank": (_int, []),
    "dcomm_cross_size": (_int, []),
    "dcomm_comm_create": (_int, [_c_int_p, _int, ctypes.POINTER(_i32)]),
    "dcomm_comm_destroy": (_int, [_i32]),
    "dcomm_comm_rank": (_int, [_i32]),
    "dcomm_comm_size": (_int, [_i32]),
    "dcomm_set_shape": (_int, [_int, ctypes.POINTER(ctypes.c_int64)]),
    "dcomm_allreduce_async": (_int, [_i32, _cp, _vp, _vp, _sz, _int, _int, _handle_p]),
    "dcomm_broadcast_async": (_int, [_i32, _cp, _vp, _sz, _int, _int, _handle_p]),
    "dcomm_allgather_async": (_int, [_i32, _cp, _vp, _sz, _int, _handle_p]),
    "dcomm_alltoall_async": (_int, [_i32, _cp, _vp, _size_p, _int, _handle_p]),
    "dcomm_reducescatter_async": (_int, [_i32, _cp, _vp, _sz, _int, _int, _handle_p]),
    "dcomm_barrier_async": (_int, [_i32, _handle_p]),
    "dcomm_join_async": (_int, [_i32, _handle_p]),
    "dcomm_timeline_start": (_int, [_cp]),
    "dcomm_timeline_stop": (_int, []),
    "dcomm_poll": (_int, [_u64, _c_int_p]),
    "dcomm_wait": (_int, [_u64]),
    "dcomm_result": (_int, [_u64, ctypes.POINTER(_vp), _size_p, ctypes.POINTER(_size_p)]),
    "dcomm_release": (_int, [_u64]),
    "dcomm_status_string": (_cp, [_int]),
    "dcomm_last_error": (_cp, []),
    "dcomm_version": (_cp, []),
    "dcomm_dtype_size": (_sz, [_int]),
    "dcomm_hosts_updated": (_int, [ctypes.POINTER(_u64), _c_int_p]),
}

for _name, (_res, _args) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args

# dcomm_internal.h: the synchronous calls' hint (absent from an older library:
# then they simply wake the coordinator thread, as _async calls do).
hint_wait_follows = getattr(lib, "dc_api_hint_wait_follows", None)
if hint_wait_follows is not None:
    hint_wait_follows.restype = None
    hint_wait_follows.argtypes = [_int]


def last_error():
    msg = lib.dcomm_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def check(status, call):
    """Raises DcommError for a negative status, with this thread's last error."""
    if status >= 0:
        return status
    msg = last_error() or lib.dcomm_status_string(status).decode()
    raise _ERROR_CLASSES.get(status, DcommError)(status, msg, call)


def encode_name(name):
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError("tensor name must be a str or None, not %s" % type(name).__name__)
    return name.encode("utf-8")


def version():
    return lib.dcomm_version().decode()


def _check_version():
    """The C ABI declared above is this package's: a libdcomm of another
    version may differ in it, so it is refused at import."""
    found = version()
    if found != __version__:
        raise ImportError(
            "dcomm: this Python package is version %s but the libdcomm it loaded (%s) is "
            "version %s; install the package and the library from the same sources (pip "
            "install of the repository root bundles both), or point DCOMM_LIBRARY at a "
            "libdcomm %s" % (__version__, LIBRARY_PATH, found, __version__))


_check_version()
