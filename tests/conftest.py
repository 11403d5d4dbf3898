"""Shared fixtures. Ray tests start their own local cluster (never attach to a running one)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A tiny budget for tests that actually train: 2 train clips per class, 1 test clip per class.
TINY = [
    "trainer.epochs=1", "data.train_per_class=2", "data.test_per_class=1", "trainer.batch_size=8",
]


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only contend on the 2 shared CI cores (much slower).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray cluster with 2 CPUs for this test session."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "platform")}})
    yield ray
    ray.shutdown()


@pytest.fixture
def ablate_cmd():
    """The CLI as users run it."""
    return [sys.executable, str(REPO / "jobs" / "ablate.py")]
