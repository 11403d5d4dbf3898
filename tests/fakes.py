"""Test doubles shared by the unit tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray.train

_COUNTER = itertools.count()


class FakeTrain:
    """The few ``ray.train`` calls of the loop, in-process: reports and checkpoints are kept
    (checkpoint directories copied, as Ray Train persists them), a restart hands the latest
    one back, and the preemption warning arrives at a chosen check."""

    def __init__(self, storage: Path, resume=None, warn_at: int = 0) -> None:
        self.storage, self.resume, self.warn_at = storage, resume, warn_at
        self.reports: list[dict] = []
        self.latest = resume
        self.checks = 0

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(
            get_world_rank=lambda: 0, get_world_size=lambda: 1))
        monkeypatch.setattr(ray.train, "get_checkpoint", lambda: self.resume)
        monkeypatch.setattr(ray.train, "report", self.report)
        monkeypatch.setattr(ray.train, "get_preemption_info", self.preemption)

    def report(self, metrics, checkpoint=None):
        import shutil

        self.reports.append(dict(metrics))
        if checkpoint is not None:
            dest = self.storage / f"ckpt-{next(_COUNTER)}"
            shutil.copytree(checkpoint.path, dest)
            self.latest = ray.train.Checkpoint.from_directory(str(dest))

    def preemption(self):
        self.checks += 1
        return object() if self.checks == self.warn_at else None


def run_until_preempted(loop, config: dict, fake, monkeypatch,
                        entry: str = "train_loop_per_worker") -> None:
    """Run ``loop.<entry>`` (a Ray Train worker; ``train_loop_in_trial`` with a ``FakeTune``)
    until its just-in-time checkpoint on the preemption warning is saved, then die as the
    preempted node would."""
    original = loop._jit_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("node preempted")

    with monkeypatch.context() as m:
        fake.install(m)
        m.setattr(loop, "_jit_checkpoint", save_then_die)
        with pytest.raises(RuntimeError, match="node preempted"):
            getattr(loop, entry)(config)


def resume_matches_uninterrupted(loop, config: dict, fake, clean, monkeypatch,
                                 entry: str = "train_loop_per_worker") -> None:
    """Run ``loop.<entry>`` to the end with ``fake`` (restarted after a preemption in epoch 2
    of 3) and check that epoch 1 is not repeated and epochs 2-3 match the ``clean`` run."""
    with monkeypatch.context() as m:
        fake.install(m)
        getattr(loop, entry)(config)
    assert [r["epoch"] for r in fake.reports] == [2, 3]  # epoch 1 is not repeated
    for got, want in zip(fake.reports, clean.reports[1:], strict=True):
        for key in ("train_loss", "base_acc", "novel_acc"):  # epoch 2 = steps 1-4 + 5-8
            assert got[key] == pytest.approx(want[key], rel=1e-6), key


class FakeTune:
    """The few ``ray.tune`` calls of a loop run in the trial's own process (``TrialSession``),
    in-process: each checkpoint is copied into ``<trial>/checkpoint_<index>`` as Tune's
    storage does, ``known`` is the checkpoint Tune's saved state would hand back on a restart
    (it may lag behind the folder), and the drain warning arrives at a chosen check."""

    def __init__(self, trial: Path, known=None, warn_at: int = 0, start_index: int = 0) -> None:
        import pyarrow.fs

        self.trial, self.known, self.warn_at = trial, known, warn_at
        self.trial.mkdir(parents=True, exist_ok=True)
        self.reports: list[dict] = []
        self.index = start_index - 1
        self.checks = 0
        self.storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(),
                                       trial_fs_path=str(trial), checkpoint_fs_path="")

    def install(self, monkeypatch) -> None:
        from ray import tune

        from vidablate.train.session import TrialSession

        monkeypatch.setattr(tune, "report", self.report)
        monkeypatch.setattr(tune, "get_checkpoint", lambda: self.known)
        monkeypatch.setattr(TrialSession, "_storage", staticmethod(lambda: self.storage))
        monkeypatch.setattr(TrialSession, "preempted", lambda _self: self.preemption())

    def report(self, metrics, checkpoint=None):
        import pyarrow.fs

        if checkpoint is not None:  # uploaded first, as Tune's storage does (pyarrow's copy)
            self.index += 1
            dest = self.trial / f"checkpoint_{self.index:06d}"
            self.storage.checkpoint_fs_path = str(dest)
            dest.mkdir(exist_ok=True)  # Tune writes over a folder of that name
            pyarrow.fs.copy_files(checkpoint.path, str(dest))
        self.reports.append(dict(metrics))

    def preemption(self) -> bool:
        self.checks += 1
        return self.checks == self.warn_at
