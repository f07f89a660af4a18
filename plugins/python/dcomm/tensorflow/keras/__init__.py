"""dcomm.tensorflow.keras: the same module as dcomm.keras (Keras 3 on TensorFlow)."""

from ...keras import *  # noqa: F401,F403
from ...keras import (DistributedOptimizer, PartialDistributedOptimizer,  # noqa: F401
                      allreduce, broadcast_global_variables, callbacks, load_model)
