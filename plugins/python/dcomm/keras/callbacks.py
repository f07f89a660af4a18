"""horovod.keras's callbacks for Keras 3 over dcomm."""

import keras
import numpy as np

from .. import _ops as _np_ops
from ..tensorflow.functions import broadcast_variables
from ..tensorflow.mpi_ops import Average, global_process_set, size


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """Makes every rank's model and optimizer variables root_rank's: the
    model's at the start of training (when built), all of them again after
    the first batch (the optimizer makes its variables at its first step).
    local_variables: variables left as they are on each rank."""

    def __init__(self, root_rank, device='', local_variables=None,
                 process_set=global_process_set):
        super().__init__()
        self.root_rank = root_rank
        self.process_set = process_set
        self.broadcast_done = False
        self.local_variables = {id(v) for v in local_variables or ()}

    def _broadcast(self, variables):
        """variables but local_variables (those stay this rank's own)."""
        broadcast_variables([v for v in variables if id(v) not in self.local_variables],
                            self.root_rank, process_set=self.process_set)

    def on_train_begin(self, logs=None):
        if self.model.built and not self.broadcast_done:
            self._broadcast(self.model.variables)

    def on_batch_end(self, batch, logs=None):
        if self.broadcast_done:
            return
        self._broadcast(self.model.variables)
        if self.model.optimizer is not None:
            self._broadcast(self.model.optimizer.variables)
        self.broadcast_done = True


class MetricAverageCallback(keras.callbacks.Callback):
    """At each epoch's end, every metric in logs becomes its average over the
    ranks (so rank 0's history and checkpoints see the job's values). Put it
    before callbacks that read the metrics."""

    def __init__(self, device='', process_set=global_process_set):
        super().__init__()
        self.process_set = process_set

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        names = sorted(k for k, v in logs.items() if np.ndim(v) == 0)
        values = np.array([float(logs[k]) for k in names], dtype=np.float64)
        avg = _np_ops.allreduce_async(values, Average, "MetricAverageCallback.%d" % epoch,
                                      self.process_set).synchronize()
        for k, v in zip(names, avg):
            logs[k] = float(v)


def _set_lr(optimizer, lr):
    optimizer.learning_rate = lr


def _get_lr(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class LearningRateScheduleCallback(keras.callbacks.Callback):
    """lr = initial_lr * multiplier(epoch) for start_epoch <= epoch < end_epoch
    (multiplier: a number or a function of the epoch). staircase: set at each
    epoch's start; else each batch, with the epoch fractional. As Horovod,
    with momentum_correction the momentum is scaled by new_lr/old_lr for the
    batch that the change happens in."""

    def __init__(self, initial_lr, multiplier, start_epoch=0, end_epoch=None, staircase=True,
                 momentum_correction=True, steps_per_epoch=None, verbose=0):
        super().__init__()
        self.initial_lr = initial_lr
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.staircase = staircase
        self.momentum_correction = momentum_correction
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.current_epoch = None
        self.restore_momentum = None
        self.multiplier = multiplier if callable(multiplier) else (lambda epoch: multiplier)

    def _active(self, epoch):
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def _adjust(self, epoch):
        old = _get_lr(self.model.optimizer)
        new = self.initial_lr * self.multiplier(epoch)
        _set_lr(self.model.optimizer, new)
        momentum = getattr(self.model.optimizer, "momentum", None)
        if self.momentum_correction and old and isinstance(momentum, float) and momentum:
            self.restore_momentum = momentum
            self.model.optimizer.momentum = momentum * new / old
        return new

    def _restore(self):
        if self.restore_momentum is not None:
            self.model.optimizer.momentum = self.restore_momentum
            self.restore_momentum = None

    def on_train_begin(self, logs=None):
        if self.steps_per_epoch is None:
            self.steps_per_epoch = self.params.get("steps") if self.params else None
        if self.initial_lr is None:
            self.initial_lr = _get_lr(self.model.optimizer)

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_batch_begin(self, batch, logs=None):
        if not self._active(self.current_epoch):
            return
        if self.staircase and batch == 0:
            self._adjust(self.current_epoch)
        elif not self.staircase:
            if not self.steps_per_epoch:
                raise ValueError("steps_per_epoch is needed for staircase=False; pass it")
            self._adjust(self.current_epoch + float(batch) / self.steps_per_epoch)

    def on_batch_end(self, batch, logs=None):
        self._restore()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = _get_lr(self.model.optimizer)


class LearningRateWarmupCallback(LearningRateScheduleCallback):
    """Ramps the lr from initial_lr / size to initial_lr over warmup_epochs,
    each batch (Goyal et al.), as Horovod's."""

    def __init__(self, initial_lr, warmup_epochs=5, momentum_correction=True,
                 steps_per_epoch=None, verbose=0):
        def multiplier(epoch):
            epoch += 1.0 / self.steps_per_epoch     # the lr at the end of this batch
            return 1.0 / size() * (epoch * (size() - 1) / warmup_epochs + 1)
        super().__init__(initial_lr, multiplier, start_epoch=0, end_epoch=warmup_epochs,
                         staircase=False, momentum_correction=momentum_correction,
                         steps_per_epoch=steps_per_epoch, verbose=verbose)
        self.warmup_epochs = warmup_epochs

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == self.end_epoch - 1 and self.verbose > 0:
            print("\nEpoch %d: finished gradual learning rate warmup to %g."
                  % (epoch + 1, _get_lr(self.model.optimizer)))
