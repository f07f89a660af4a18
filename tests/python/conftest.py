"""Every test module runs on every rank of a dlaunch job, in the same order, so
their collectives pair up. dcomm is initialized once per process."""

import pytest

import dcomm


@pytest.fixture(scope="session", autouse=True)
def dcomm_job():
    dcomm.init()
    yield
    dcomm.barrier()
    dcomm.shutdown()
