"""dcomm.tensorflow.keras.callbacks: dcomm.keras.callbacks."""

from ...keras.callbacks import (BroadcastGlobalVariablesCallback,  # noqa: F401
                                LearningRateScheduleCallback, LearningRateWarmupCallback,
                                MetricAverageCallback)
