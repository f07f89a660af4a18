"""DistributedOptimizer for Keras 3: a subclass of the wrapped optimizer's
class made at wrap time, whose apply() reduces the gradients over the set's
ranks before the optimizer uses them. It is a real Keras optimizer, so
model.compile/fit, get_config/from_config and saving work as for the original."""

import keras

from ..tensorflow.compression import Compression
from ..tensorflow.gradients import var_key, reduce_gradients
from ..tensorflow.mpi_ops import Average, global_process_set


class _Distributed:
    """Mixed in before the optimizer's class; _dc_args (class attribute, so
    from_config keeps it) holds the reduction's arguments."""
    _dc_args = {}
    _dc_local = ()

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
        return super().apply(self._dc_reduce(grads, trainable_variables), trainable_variables)

    def _compute_gradients(self, loss, var_list, grad_loss=None, tape=None):
        """Keras 2's private step that Horovod's tests call: [(reduced
        gradient, variable)]; loss is a tensor (with its tape) or a callable."""
        import tensorflow as tf
        var_list = list(var_list)
        if callable(loss):
            with tf.GradientTape() as tape:
                tape.watch(var_list)
                loss = loss()
        grads = tape.gradient(loss, var_list, grad_loss)
        return list(zip(self._dc_reduce(list(grads), var_list), var_list))

    def _dc_reduce(self, grads, variables):
        local = ({var_key(v) for layer in self._dc_local for v in layer.trainable_weights}
                 if self._dc_local and variables is not None else set())
        return reduce_gradients(grads, variables, local, self._dc_scale_local, **self._dc_args)


def distributed_class(base, args, local_layers=(), scale_local_gradients=True):
    """The distributed subclass of optimizer class base, with these arguments."""
    return type(base.__name__, (_Distributed, base),
                {"_dc_args": dict(args), "_dc_local": tuple(local_layers),
                 "_dc_scale_local": scale_local_gradients,
                 "__module__": __name__})


def DistributedOptimizer(optimizer, name=None, device_dense='', device_sparse='',
                         compression=Compression.none, sparse_as_dense=False,
                         gradient_predivide_factor=1.0, op=Average,
                         backward_passes_per_step=1, average_aggregated_gradients=False,
                         num_groups=0, groups=None, process_set=global_process_set,
                         scale_local_gradients=True):
    """A copy of a Keras 3 optimizer (same class and config) that reduces the
    gradients over the set's ranks (default: average) before applying them.
    backward_passes_per_step > 1 uses Keras's gradient_accumulation_steps;
    the gradients are then reduced every step (see the README)."""
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError("dcomm.keras.DistributedOptimizer wraps a Keras 3 optimizer, not %s"
                         % type(optimizer).__name__)
    if gradient_predivide_factor != 1.0 and op != Average:
        raise ValueError("gradient_predivide_factor not supported with op != Average")
    base = type(optimizer)
    if issubclass(base, _Distributed):
        raise ValueError("the optimizer is already a DistributedOptimizer")
    cls = distributed_class(base, dict(compression=compression, sparse_as_dense=sparse_as_dense,
                                       op=op, gradient_predivide_factor=gradient_predivide_factor,
                                       process_set=process_set),
                            scale_local_gradients=scale_local_gradients)
    config = optimizer.get_config()
    if name is not None:
        config["name"] = name
    if backward_passes_per_step > 1:
        config["gradient_accumulation_steps"] = backward_passes_per_step
    return cls.from_config(config)


def PartialDistributedOptimizer(optimizer, name=None, device_dense='', device_sparse='',
                                compression=Compression.none, sparse_as_dense=False,
                                gradient_predivide_factor=1.0, op=Average,
                                backward_passes_per_step=1, average_aggregated_gradients=False,
                                groups=None, process_set=global_process_set,
                                local_layers=None, scale_local_gradients=True):
    """DistributedOptimizer that leaves the gradients of local_layers' weights
    unreduced (divided by the set's size when scale_local_gradients)."""
    opt = DistributedOptimizer(optimizer, name, device_dense, device_sparse, compression,
                               sparse_as_dense, gradient_predivide_factor, op,
                               backward_passes_per_step, average_aggregated_gradients, 0,
                               groups, process_set, scale_local_gradients)
    if isinstance(local_layers, keras.layers.Layer):
        local_layers = [local_layers]
    type(opt)._dc_local = tuple(local_layers or ())
    return opt


def load_model(filepath, custom_optimizers=None, custom_objects=None,
               compression=Compression.none):
    """keras.models.load_model, with the saved optimizer made distributed in
    place (its class becomes the distributed subclass; its state is kept).
    custom_optimizers: accepted for Horovod's signature (Keras 3 finds
    optimizer classes through custom_objects or its registry)."""
    objects = dict(custom_objects or {})
    for c in custom_optimizers or ():
        objects.setdefault(c.__name__, c)
    model = keras.models.load_model(filepath, custom_objects=objects or None)
    opt = getattr(model, "optimizer", None)
    if opt is not None and not isinstance(opt, _Distributed):
        opt.__class__ = distributed_class(type(opt), dict(
            compression=compression, sparse_as_dense=False, op=Average,
            gradient_predivide_factor=1.0, process_set=global_process_set))
    return model
