"""dcomm.torch.elastic: horovod.torch.elastic's names over dcomm.elastic.

    state = hvd.elastic.TorchState(model, optimizer, epoch=0, batch=0)
    state.register_reset_callbacks([rescale_lr])

    @hvd.elastic.run
    def train(state):
        for state.epoch in range(state.epoch, epochs):
            ...
            state.commit()

Models, optimizers and ElasticSamplers given to TorchState are saved at
commit (deep copies of their state_dict), restored after a lost peer, and
synced from rank 0 after each reset; every other keyword is a plain object
(ObjectState). See dcomm.elastic for what run does.
"""
import copy
import math

import torch
import torch.utils.data

from .. import elastic as _elastic
from ..elastic import (HorovodInternalError, HostsUpdatedInterrupt, ObjectState, State,
                       run_fn)
from .functions import broadcast_object, broadcast_optimizer_state, broadcast_parameters
from .mpi_ops import init, is_initialized, rank, shutdown, size


class ElasticSampler(torch.utils.data.Sampler):
    """Splits a dataset's indices among the ranks, and again among the new
    ranks after a reset, skipping what this epoch has processed (record_batch);
    set_epoch at the end of each epoch starts the next (reshuffled) one."""

    def __init__(self, dataset, shuffle=True, seed=0):
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.processed_num = 0
        self.reset()

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.processed_num = 0
        self.reset()

    def record_batch(self, batch_idx, batch_size):
        """batch_size samples were processed on every rank."""
        self.processed_num += batch_size * self.num_replicas

    def state_dict(self):
        return {"epoch": self.epoch, "processed_num": self.processed_num}

    def load_state_dict(self, state_dict):
        self.epoch = state_dict["epoch"]
        self.processed_num = state_dict["processed_num"]
        self.reset()

    def reset(self):
        """Repartitions the rest of the epoch among the current ranks."""
        self.num_replicas, self.rank = size(), rank()
        n = len(self.dataset)
        if self.shuffle:
            gen = torch.Generator()
            gen.manual_seed(self.seed + self.epoch)  # the same order on every rank
            order = torch.randperm(n, generator=gen).tolist()
        else:
            order = list(range(n))
        self.remaining_indices = order[self.processed_num:]
        self.num_samples = math.ceil(len(self.remaining_indices) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        padded = list(self.remaining_indices)
        while padded and len(padded) < self.total_size:  # pad evenly divisible
            padded += padded[:self.total_size - len(padded)]
        return iter(padded[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples


class _Tracked:
    """A model, optimizer or sampler in a TorchState: a saved copy of its
    state_dict, and how rank 0's state reaches the others."""

    def __init__(self, value):
        self.value = value
        self.save()

    def save(self):
        self.saved = copy.deepcopy(self.value.state_dict())

    def restore(self):
        self.value.load_state_dict(self.saved)

    def sync(self):
        if isinstance(self.value, torch.nn.Module):
            broadcast_parameters(self.value.state_dict(), root_rank=0)
        elif isinstance(self.value, torch.optim.Optimizer):
            broadcast_optimizer_state(self.value, root_rank=0)
        else:
            self.value.load_state_dict(broadcast_object(self.value.state_dict()))


_TRACKED_TYPES = (torch.nn.Module, torch.optim.Optimizer, ElasticSampler)


class TorchState(ObjectState):
    """Horovod's TorchState(model, optimizer, **kwargs)."""

    def __init__(self, model=None, optimizer=None, **kwargs):
        kwargs.update(model=model, optimizer=optimizer)
        tracked = {k: _Tracked(v) for k, v in kwargs.items() if isinstance(v, _TRACKED_TYPES)}
        object.__setattr__(self, "_tracked", tracked)
        for k, t in tracked.items():
            object.__setattr__(self, k, t.value)
        plain = {k: v for k, v in kwargs.items() if k not in tracked}
        super().__init__(bcast_object=broadcast_object, get_rank=rank, **plain)

    def __setattr__(self, name, value):
        tracked = self.__dict__.get("_tracked", {})
        if name in tracked:  # a new model/optimizer object: track it, saved now
            tracked[name].value = value
            tracked[name].save()
        super().__setattr__(name, value)

    def save(self):
        for t in self._tracked.values():
            t.save()
        super().save()

    def restore(self):
        for t in self._tracked.values():
            t.restore()
        super().restore()

    def sync(self):
        for t in self._tracked.values():
            t.sync()
        super().sync()


def _reset():
    if is_initialized():
        try:
            shutdown()
        except _elastic.DcommError:  # the runtime already stopped itself after the loss
            pass
    init()


def run(func):
    """Decorator: run func(state, ...) elastically (dcomm.elastic.run with
    dcomm.torch's init and shutdown)."""
    return run_fn(func, _reset)


__all__ = ["ElasticSampler", "HorovodInternalError", "HostsUpdatedInterrupt", "ObjectState",
           "State", "TorchState", "run"]
