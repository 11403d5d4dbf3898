"""The loop in a Tune trial's own process (``TrialSession``): it finds its newest checkpoint
in the trial's storage folder, saves a just-in-time checkpoint when its node is drained, and a
restart continues exactly where a clean run would be."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs
import torch

from vidablate.train import loop
from vidablate.train.checkpoint import STATE_FILE
from vidablate.train.session import PROGRESS_FILE, TrialSession, newest_checkpoint

from ..fakes import FakeTune, resume_matches_uninterrupted, run_until_preempted

WHOLE = b"PK\x03\x04 a state file " + b"PK\x05\x06" + bytes(18)


def _folder(trial: Path, name: str, epoch: int, step: int = 0, state: bytes | None = WHOLE,
            progress: bool = True) -> None:
    d = trial / name
    d.mkdir(parents=True)
    if state is not None:
        (d / STATE_FILE).write_bytes(state)
    if progress:
        (d / PROGRESS_FILE).write_text(json.dumps({"epoch": epoch, "step": step}))


def test_newest_checkpoint_is_the_most_trained_complete_folder(tmp_path):
    fs = pyarrow.fs.LocalFileSystem()
    trial = tmp_path / "trial"
    assert newest_checkpoint(fs, str(trial)) is None  # no folder yet
    _folder(trial, "checkpoint_000000", 1)
    _folder(trial, "checkpoint_000001", 3)  # written over an older index after a restore
    _folder(trial, "checkpoint_000002", 2, step=5)  # a just-in-time checkpoint in epoch 3
    _folder(trial, "checkpoint_000003", 4, state=None)  # its state never arrived
    _folder(trial, "checkpoint_000004", 5, state=b"")  # empty state file
    _folder(trial, "checkpoint_000007", 7, state=WHOLE[:-5])  # a copy stopped midway
    _folder(trial, "checkpoint_000005", 6, progress=False)  # no progress file
    (trial / "result.json").write_text("{}")
    assert newest_checkpoint(fs, str(trial)) == str(trial / "checkpoint_000001")
    _folder(trial, "checkpoint_000006", 3, step=2)  # 3 epochs and 2 steps beats 3 epochs
    assert newest_checkpoint(fs, str(trial)) == str(trial / "checkpoint_000006")


def _experiment(epochs: int = 3) -> dict:
    return {"model": {"sirm": True, "sgam": True},
            "data": {"train_per_class": 2, "test_per_class": 1},
            "trainer": {"epochs": epochs, "batch_size": 4, "num_workers": 1,
                        "lr_visual": 1e-3, "lr_new": 1e-2, "preemption_check_every": 2}}


def test_drained_node_checkpoint_and_restart_continue_exactly_in_the_trial_process(
        tmp_path, monkeypatch):
    """Checks at steps 2, 4, 6, 8 of each 8-step epoch: the 6th is epoch 2, step 4. The
    restart is handed Tune's older checkpoint (epoch 1, as a driver killed before its state
    snapshot would) and still resumes from the just-in-time one in the folder."""
    config = {"experiment": _experiment(), "mlflow_run_id": None}
    clean = FakeTune(tmp_path / "clean")
    with monkeypatch.context() as m:
        clean.install(m)
        loop.train_loop_in_trial(config)
    assert [r["epoch"] for r in clean.reports] == [1, 2, 3]

    first = FakeTune(tmp_path / "run", warn_at=6)
    run_until_preempted(loop, config, first, monkeypatch, entry="train_loop_in_trial")
    assert first.reports[-1] == {"epoch": 1, "jit_checkpoint_step": 4}
    jit = tmp_path / "run" / "checkpoint_000001"
    assert json.loads((jit / PROGRESS_FILE).read_text()) == {"epoch": 1, "step": 4}
    state = torch.load(jit / STATE_FILE, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 4)

    from ray import tune

    known = tune.Checkpoint.from_directory(str(tmp_path / "run" / "checkpoint_000000"))
    second = FakeTune(tmp_path / "run", known=known, start_index=1)
    resume_matches_uninterrupted(loop, config, second, clean, monkeypatch,
                                 entry="train_loop_in_trial")


def test_trial_session_is_one_worker_on_the_cpu_without_ddp():
    s = TrialSession()
    assert (s.rank, s.world, s.executor) == (0, 1, "trial")
    model = torch.nn.Linear(2, 2)
    assert s.wrap(model) is model and s.device(False) == torch.device("cpu")
    assert s.preempted() is False  # outside Ray: no drain state to read, no warning
