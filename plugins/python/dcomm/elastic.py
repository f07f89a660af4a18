"""Elastic training with dcomm (Horovod's horovod.common.elastic names), for
NumPy users; dcomm.torch.elastic builds TorchState on it.

    import dcomm, dcomm.elastic
    dcomm.init()
    state = dcomm.elastic.ObjectState(epoch=0, weights=np.zeros(10))

    @dcomm.elastic.run
    def train(state):
        while state.epoch < 5:
            ...                        # collectives
            state.epoch += 1
            state.commit()             # saves; raises HostsUpdatedInterrupt when hosts changed

    train(state)

Run under `dlaunch --min-np 2 --host-discovery-script ./hosts.sh python3 train.py`.
When a peer is lost, a collective raises HorovodInternalError (a DcommError of
status PEER_LOST, SHUT_DOWN or TIMEOUT): run restores the last commit, joins
dlaunch's next round (shutdown + init: new ranks, new size), syncs the state
from the new rank 0 and calls the function again. When dlaunch's hosts change,
the next commit raises HostsUpdatedInterrupt on every rank at once (rank 0's
view is broadcast), and the same reset follows (without the restore).
"""
import functools
import pickle
import queue

import numpy as np

from . import _core, _lib
from ._lib import DcommError

# Horovod's HostUpdateResult bits.
NO_UPDATE, REMOVED, ADDED, MIXED = 0, 1, 2, 3

# The statuses of a collective that failed because the job's membership changed.
_PEER_STATUSES = frozenset((-5, -6, -7, _lib.ERR_SHUT_DOWN))  # PEER_LOST TIMEOUT TRANSPORT


class HorovodInternalError(DcommError):
    """A failure run resets on, as a collective's DcommError of status
    PEER_LOST, SHUT_DOWN, TIMEOUT or TRANSPORT is; raise it to force a reset."""

    def __init__(self, message="", status=-5, call=None):
        super().__init__(status, message, call)


class HostsUpdatedInterrupt(RuntimeError):
    """Raised by State.commit (on every rank together) when dlaunch's hosts
    changed; skip_sync: only hosts were removed, the survivors' state agrees."""

    def __init__(self, skip_sync):
        super().__init__("hosts updated%s" % (" (removed only)" if skip_sync else ""))
        self.skip_sync = skip_sync


def _is_peer_failure(exc):
    return isinstance(exc, HorovodInternalError) or \
        (isinstance(exc, DcommError) and exc.status in _PEER_STATUSES)


def hosts_updated():
    """dlaunch's latest hosts notice since this round formed: (stamp, result);
    (0, 0) when none (or not an elastic job)."""
    stamp = _lib.ctypes.c_uint64(0)
    result = _lib.ctypes.c_int(0)
    _lib.check(_lib.lib.dcomm_hosts_updated(_lib.ctypes.byref(stamp), _lib.ctypes.byref(result)),
               "dcomm_hosts_updated")
    return stamp.value, result.value


class _HostMessages(queue.Queue):
    """Horovod's queue of (timestamp, HostUpdateResult) notices; dlaunch is
    asked whenever the queue is looked at (no listener thread)."""

    def __init__(self):
        super().__init__()
        self._seen = 0

    def _poll(self):
        if not _core.is_initialized():
            return
        stamp, result = hosts_updated()
        if stamp > self._seen:
            self._seen = stamp
            self.put((stamp, result))

    def empty(self):
        self._poll()
        return super().empty()


def broadcast_object(obj, root_rank=0, name=None):
    """obj of root_rank (pickled), returned on every rank (NumPy transport)."""
    from . import broadcast_, rank
    name = name or type(obj).__name__
    mine = rank() == root_rank
    payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8).copy() if mine else None
    length = np.array([payload.size if mine else 0], dtype=np.int64)
    broadcast_(length, root_rank, name="%s.len" % name)
    if not mine:
        payload = np.empty(int(length[0]), dtype=np.uint8)
    broadcast_(payload, root_rank, name="%s.data" % name)
    return obj if mine else pickle.loads(payload.tobytes())


class State:
    """Horovod's State: in-memory state that survives membership changes.
    bcast_object(obj) broadcasts from rank 0; get_rank() is this rank."""

    def __init__(self, bcast_object, get_rank):
        self._bcast_object = bcast_object
        self._rank = get_rank
        self._host_messages = _HostMessages()
        self._last_updated_timestamp = 0
        self._reset_callbacks = []

    def register_reset_callbacks(self, callbacks):
        """Functions called after each reset (e.g. to rescale the learning rate)."""
        self._reset_callbacks.extend(callbacks)

    def on_reset(self):
        self._host_messages = _HostMessages()
        self.reset()
        for callback in self._reset_callbacks:
            callback()

    def on_hosts_updated(self, timestamp, update_res):
        self._host_messages.put((timestamp, update_res))

    def commit(self):
        """Saves the state, then raises HostsUpdatedInterrupt when hosts changed."""
        self.save()
        self.check_host_updates()

    def check_host_updates(self):
        """Raises HostsUpdatedInterrupt on every rank when rank 0 saw a newer
        hosts notice (collective: rank 0's view is broadcast)."""
        last = prev = self._last_updated_timestamp
        update = NO_UPDATE
        while not self._host_messages.empty():
            timestamp, res = self._host_messages.get()
            if timestamp > last:
                last = timestamp
                update |= res
        prev, self._last_updated_timestamp, update = self._bcast_object((prev, last, update))
        if self._last_updated_timestamp > prev:
            raise HostsUpdatedInterrupt(update == REMOVED)

    def save(self):
        raise NotImplementedError()

    def restore(self):
        raise NotImplementedError()

    def sync(self):
        raise NotImplementedError()

    def reset(self):
        pass


class ObjectState(State):
    """State of plain Python objects, given as keyword arguments and kept as
    attributes; synced by a broadcast from rank 0."""

    def __init__(self, bcast_object=None, get_rank=None, **kwargs):
        from . import rank
        bcast_object = bcast_object or broadcast_object
        self._bcast_object = bcast_object
        self._saved_state = kwargs
        self._set_attrs()
        super().__init__(bcast_object=bcast_object, get_rank=get_rank or rank)

    def save(self):
        self._saved_state = {attr: getattr(self, attr) for attr in self._saved_state}

    def restore(self):
        self._set_attrs()

    def sync(self):
        if self._saved_state:
            self._saved_state = self._bcast_object(self._saved_state)
            self._set_attrs()

    def _set_attrs(self):
        for attr, value in self._saved_state.items():
            setattr(self, attr, value)


def run_fn(func, reset):
    """Horovod's run_fn: calls func(state, ...) until it returns, resetting
    (reset(), then state.on_reset()) after a lost peer or a hosts update."""
    @functools.wraps(func)
    def wrapper(state, *args, **kwargs):
        skip_sync = False
        while True:
            try:
                if not skip_sync:
                    state.sync()
                return func(state, *args, **kwargs)
            except DcommError as e:
                if not _is_peer_failure(e):
                    raise
                state.restore()
                skip_sync = False
            except HostsUpdatedInterrupt as e:
                skip_sync = e.skip_sync
            reset()
            state.on_reset()
    return wrapper


def _reset():
    if _core.is_initialized():
        try:
            _core.shutdown()
        except DcommError:  # the runtime already stopped itself after the loss
            pass
    _core.init()


def run(func):
    """Decorator: run func(state, ...) elastically (see the module's doc)."""
    return run_fn(func, _reset)


__all__ = ["HorovodInternalError", "HostsUpdatedInterrupt", "ObjectState", "State", "run",
           "run_fn", "hosts_updated", "broadcast_object"]
