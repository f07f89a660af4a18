"""Helpers horovod.tensorflow.util has, which its users and tests import."""

import tensorflow as tf
from packaging import version


def _executing_eagerly():
    return tf.executing_eagerly()


def is_version_greater_equal_than(ver, target):
    """Whether version string ver >= target (horovod.common.util's helper)."""
    return version.parse(ver) >= version.parse(target)
