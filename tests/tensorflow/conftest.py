"""Every test module runs on every rank of a dlaunch job, in the same order, so
their collectives pair up. dcomm is initialized once per process."""

import pytest

import dcomm.tensorflow as hvd


@pytest.fixture(scope="session", autouse=True)
def dcomm_job():
    hvd.init()
    yield
    hvd.barrier()
    hvd.shutdown()
