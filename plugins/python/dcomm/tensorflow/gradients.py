"""Gradient reduction: DistributedGradientTape (and its partial form) and
DistributedOptimizer for TF1-style tf.compat.v1.train optimizers; Keras
optimizers are handed to dcomm.keras."""

import tensorflow as tf

from .compression import Compression
from .mpi_ops import Adasum, Average, Sum, UnsupportedError, _lib, global_process_set


def allreduce_gradients(grads, compression=Compression.none, sparse_as_dense=False, op=Average,
                        gradient_predivide_factor=1.0, process_set=global_process_set):
    """The reduced gradients (None stays None), dense ones as one group."""
    from . import grouped_allreduce
    if op == Adasum:
        raise UnsupportedError(_lib.ERR_UNSUPPORTED, "Adasum is not supported by dcomm",
                               "DistributedGradientTape")
    prescale = postscale = 1.0
    if gradient_predivide_factor != 1.0:
        if op != Average:
            raise ValueError("gradient_predivide_factor not supported with op != Average")
        op = Sum
        prescale = 1.0 / gradient_predivide_factor
        postscale = gradient_predivide_factor / process_set.size()
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return list(grads)
    todo = []
    for i in present:
        g = grads[i]
        if sparse_as_dense and isinstance(g, tf.IndexedSlices):
            g = tf.convert_to_tensor(g)
        todo.append(g)
    reduced = grouped_allreduce(todo, compression=compression, op=op, prescale_factor=prescale,
                                postscale_factor=postscale, process_set=process_set)
    out = list(grads)
    for i, r in zip(present, reduced):
        out[i] = r
    return out


def reduce_gradients(grads, variables, local_refs, scale_local, **args):
    """grads (of variables) reduced by allreduce_gradients(**args), except
    those of variables whose var_key is in local_refs: those stay this rank's,
    divided by the set's size when scale_local (as Horovod)."""
    if not local_refs:
        return allreduce_gradients(list(grads), **args)
    grads = list(grads)
    shared = [i for i, v in enumerate(variables) if var_key(v) not in local_refs]
    for i, g in zip(shared, allreduce_gradients([grads[i] for i in shared], **args)):
        grads[i] = g
    if scale_local:
        n = float(args.get("process_set", global_process_set).size())
        for i, v in enumerate(variables):
            g = grads[i]
            if var_key(v) in local_refs and g is not None:
                grads[i] = (tf.IndexedSlices(g.values / n, g.indices, g.dense_shape)
                            if isinstance(g, tf.IndexedSlices) else g / n)
    return grads


def var_key(var):
    """A hashable key for a variable (TF1 reference variables have no ref())."""
    return var.ref() if hasattr(var, "ref") else id(var)


class _DistributedGradientTape:
    """Wraps a tf.GradientTape: gradient() reduces the gradients over the
    set's ranks, except those of sources registered as local (those are
    divided by the set's size when scale_local_gradients)."""

    def __init__(self, tape, compression, sparse_as_dense, op, gradient_predivide_factor,
                 process_set, scale_local_gradients):
        self._tape = tape
        self._args = dict(compression=compression, sparse_as_dense=sparse_as_dense, op=op,
                          gradient_predivide_factor=gradient_predivide_factor,
                          process_set=process_set)
        self.process_set = process_set
        self.scale_local_gradients = scale_local_gradients
        self._local_sources = set()

    def __getattr__(self, attr):       # watch(), stop_recording(), ... of the tape
        return getattr(self._tape, attr)

    def __enter__(self):
        self._tape.__enter__()
        return self

    def __exit__(self, *exc):
        return self._tape.__exit__(*exc)

    def register_local_source(self, source):
        """This source's gradient is this rank's own: never reduced."""
        self._local_sources.add(var_key(source))

    def gradient(self, target, sources, output_gradients=None, use_generic_names=False):
        flat = tf.nest.flatten(sources)
        grads = self._tape.gradient(target, flat, output_gradients)
        grads = reduce_gradients(grads, flat, self._local_sources, self.scale_local_gradients,
                                 **self._args)
        return tf.nest.pack_sequence_as(sources, grads)

    def get_local_and_global_gradients(self, target, sources, output_gradients=None,
                                       use_generic_names=False):
        grads = self.gradient(target, sources, output_gradients, use_generic_names)
        local, shared = [], []
        for s, g in zip(sources, grads):
            (local if var_key(s) in self._local_sources else shared).append((s, g))
        return local, shared


def DistributedGradientTape(gradtape, device_dense='', device_sparse='',
                            compression=Compression.none, sparse_as_dense=False, op=Average,
                            gradient_predivide_factor=1.0, num_groups=0, groups=None,
                            process_set=global_process_set, scale_local_gradients=True):
    """A tape whose gradient() averages (op) the gradients over the set's
    ranks. device_*, num_groups, groups: accepted; dense gradients always go
    as one group."""
    if gradient_predivide_factor != 1.0 and op != Average:
        raise ValueError("gradient_predivide_factor not supported with op != Average")
    return _DistributedGradientTape(gradtape, compression, sparse_as_dense, op,
                                    gradient_predivide_factor, process_set,
                                    scale_local_gradients)


def PartialDistributedGradientTape(gradtape, device_dense='', device_sparse='',
                                   compression=Compression.none, sparse_as_dense=False,
                                   op=Average, gradient_predivide_factor=1.0, num_groups=0,
                                   groups=None, process_set=global_process_set,
                                   local_layers=None, scale_local_gradients=True):
    """DistributedGradientTape that leaves the gradients of local_layers'
    weights unreduced."""
    import keras
    if local_layers is None:
        local_layers = []
    elif isinstance(local_layers, keras.layers.Layer):
        local_layers = [local_layers]
    elif not all(isinstance(layer, keras.layers.Layer) for layer in local_layers):
        raise ValueError("All local layers must be of keras.layers.Layer type.")
    tape = DistributedGradientTape(gradtape, device_dense, device_sparse, compression,
                                   sparse_as_dense, op, gradient_predivide_factor, num_groups,
                                   groups, process_set, scale_local_gradients)
    for layer in local_layers:
        for var in layer.trainable_weights:
            tape.register_local_source(var)
    return tape


class _LegacyDistributedOptimizer(tf.compat.v1.train.Optimizer):
    """A tf.compat.v1.train.Optimizer whose compute_gradients reduces them."""

    def __init__(self, optimizer, name, use_locking, reduce_args):
        super().__init__(name=name or "Distributed" + type(optimizer).__name__,
                         use_locking=use_locking)
        self._optimizer = optimizer
        self._reduce_args = reduce_args

    def compute_gradients(self, *args, **kwargs):
        pairs = self._optimizer.compute_gradients(*args, **kwargs)
        grads = allreduce_gradients([g for g, _ in pairs], **self._reduce_args)
        return list(zip(grads, [v for _, v in pairs]))

    def apply_gradients(self, *args, **kwargs):
        return self._optimizer.apply_gradients(*args, **kwargs)

    def get_slot(self, *args, **kwargs):
        return self._optimizer.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._optimizer.get_slot_names(*args, **kwargs)

    def variables(self, *args, **kwargs):
        return self._optimizer.variables(*args, **kwargs)


def DistributedOptimizer(optimizer, name=None, use_locking=False, device_dense='',
                         device_sparse='', compression=Compression.none, sparse_as_dense=False,
                         backward_passes_per_step=1, op=Average, gradient_predivide_factor=1.0,
                         average_aggregated_gradients=False, num_groups=0, groups=None,
                         process_set=global_process_set, scale_local_gradients=True):
    """Wraps a Keras optimizer (see dcomm.keras.DistributedOptimizer) or a
    tf.compat.v1.train.Optimizer so that gradients are reduced before they
    are applied."""
    import keras
    if isinstance(optimizer, keras.optimizers.Optimizer):
        from ..keras import DistributedOptimizer as keras_optimizer
        return keras_optimizer(optimizer, name=name, compression=compression,
                               sparse_as_dense=sparse_as_dense,
                               backward_passes_per_step=backward_passes_per_step, op=op,
                               gradient_predivide_factor=gradient_predivide_factor,
                               average_aggregated_gradients=average_aggregated_gradients,
                               process_set=process_set,
                               scale_local_gradients=scale_local_gradients)
    if isinstance(optimizer, tf.compat.v1.train.Optimizer):
        if backward_passes_per_step != 1:
            raise NotImplementedError("backward_passes_per_step > 1 is supported for Keras "
                                      "optimizers only")
        return _LegacyDistributedOptimizer(optimizer, name, use_locking, dict(
            compression=compression, sparse_as_dense=sparse_as_dense, op=op,
            gradient_predivide_factor=gradient_predivide_factor, process_set=process_set))
    raise ValueError("DistributedOptimizer wraps a Keras optimizer or a "
                     "tf.compat.v1.train.Optimizer, not %s" % type(optimizer).__name__)
