"""Checkpoints on a size-limited folder (a real tmpfs): ``save_state`` and the loop's upload to
the trial's local storage fail with NoSpaceError ahead of writing, or while writing, and leave
no partial file. No Ray cluster: the upload runs Ray Train's own storage code in-process."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray.train
import torch
from ray.train.v2._internal.execution.storage import StorageContext
from torch import nn

from vidablate.errors import NoSpaceError, out_of_space
from vidablate.train import checkpoint, session
from vidablate.train.checkpoint import (
    CHECKPOINT_MARGIN,
    STATE_FILE,
    checkpoint_bytes,
    load_state,
    save_state,
    tensor_bytes,
)

MiB = 2**20
MESSAGE = re.compile(r"^no space left on (?P<path>.+): need (?P<need>\d+) MiB, (?P<free>\d+) free$")


def expected(path: object, need: int, free: int) -> str:
    return f"no space left on {path}: need {-(-need // MiB)} MiB, {free // MiB} free"


def _trained(seed: int = 0) -> tuple[nn.Module, dict, dict]:
    """A 2 MiB trainable layer (+ a frozen one) after one Adam step: 6 MiB of state."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(512, 1024))
    model[0].requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    model[1](torch.randn(4, 512)).sum().backward()
    opt.step()
    return model, {"new": opt}, {"new": sched}


def _save(directory: Path, model, opts, scheds) -> Path:
    return save_state(directory, model, opts, scheds, 1, [{"epoch": 1}], "run-1")


def test_the_estimate_counts_model_and_optimizer_tensors_once():
    model, opts, _ = _trained()
    params = sum(p.numel() * 4 for p in model[1].parameters())
    state = {"trainable": {n: p.detach() for n, p in model.named_parameters()
                           if p.requires_grad},
             "optimizers": {k: o.state_dict() for k, o in opts.items()}}
    # Adam keeps exp_avg and exp_avg_sq per parameter (+ a 4-byte step each)
    assert tensor_bytes(state) == 3 * params + 4 * 2
    shared = model[1].weight.detach()
    assert tensor_bytes({"a": shared, "b": [shared, shared[:3]]}) == shared.numel() * 4
    assert checkpoint_bytes(state) == tensor_bytes(state) + CHECKPOINT_MARGIN


def test_save_state_refuses_a_folder_too_small_before_writing(small_disk):
    disk = small_disk("2m")
    model, opts, scheds = _trained()
    free = shutil.disk_usage(disk).free
    with pytest.raises(NoSpaceError) as info:
        _save(disk, model, opts, scheds)
    err = info.value
    assert err.path == str(disk) and err.free == free
    assert err.need >= 3 * sum(p.numel() * 4 for p in model[1].parameters())
    assert str(err) == expected(disk, err.need, free) == \
        f"no space left on {disk}: need 8 MiB, 2 free"
    assert os.listdir(disk) == []


def test_running_out_of_space_while_saving_removes_the_partial_file(small_disk, monkeypatch):
    """The estimate is forced to 0, so the check passes and torch.save meets the kernel's
    ENOSPC; it becomes NoSpaceError (free space measured when it failed)."""
    disk = small_disk("2m")
    model, opts, scheds = _trained()
    monkeypatch.setattr(checkpoint, "checkpoint_bytes", lambda state: 0)
    with pytest.raises(NoSpaceError) as info:
        _save(disk, model, opts, scheds)
    err = info.value
    assert MESSAGE.match(str(err)) and err.path == str(disk)
    assert str(err) == expected(disk, err.need, err.free)
    assert err.need > MiB and err.free < MiB  # what the write got to; the disk was full
    assert out_of_space(err.__cause__)
    assert os.listdir(disk) == []


def test_with_room_the_same_code_writes_a_checkpoint_that_loads(small_disk):
    disk = small_disk("16m")
    model, opts, scheds = _trained()
    path = _save(disk, model, opts, scheds)
    assert os.listdir(disk) == [STATE_FILE] and path == disk / STATE_FILE
    other, other_opts, other_scheds = _trained(seed=1)
    other[0].load_state_dict(model[0].state_dict())  # the same frozen weights
    state = load_state(disk, other, other_opts, other_scheds)
    assert state["epoch"] == 1 and state["mlflow_run_id"] == "run-1"
    assert torch.equal(other[1].weight, model[1].weight)
    saved = opts["new"].state_dict()["state"][0]["exp_avg"]
    assert torch.equal(other_opts["new"].state_dict()["state"][0]["exp_avg"], saved)


# -- the loop's upload to the trial's storage folder -----------------------------------------

def _checkpoint_folder(tmp_path: Path, size: int) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / STATE_FILE).write_bytes(b"\0" * size)
    return folder


def _install(monkeypatch, storage) -> list[dict]:
    """ray.train.get_context/report as in a Train worker, reporting into ``storage`` with Ray
    Train's own upload (StorageContext.persist_current_checkpoint)."""
    calls: list[dict] = []

    def report(metrics, checkpoint=None, checkpoint_dir_name=None):
        calls.append({"metrics": metrics, "name": checkpoint_dir_name})
        if checkpoint is not None:
            storage.persist_current_checkpoint(checkpoint, checkpoint_dir_name)

    monkeypatch.setattr(ray.train, "get_context",
                        lambda: SimpleNamespace(get_storage=lambda: storage))
    monkeypatch.setattr(ray.train, "report", report)
    return calls


def test_the_upload_is_refused_when_the_storage_folder_is_too_small(tmp_path, small_disk,
                                                                   monkeypatch):
    disk = small_disk("2m")
    storage = StorageContext(str(disk), "trial-0")
    calls = _install(monkeypatch, storage)
    folder = _checkpoint_folder(tmp_path, 3 * MiB)
    free = shutil.disk_usage(disk).free
    with pytest.raises(NoSpaceError) as info:
        session.report_checkpoint({"epoch": 1}, str(folder))
    need = 3 * MiB + CHECKPOINT_MARGIN
    assert str(info.value) == expected(storage.experiment_fs_path, need, free) == \
        f"no space left on {disk}/trial-0: need 4 MiB, 2 free"
    assert calls == []  # nothing reported, nothing uploaded
    assert not [p for p in Path(storage.experiment_fs_path).iterdir()
                if p.name.startswith("checkpoint_")]


def test_running_out_of_space_while_uploading_removes_the_partial_copy(tmp_path, small_disk,
                                                                      monkeypatch):
    disk = small_disk("2m")
    storage = StorageContext(str(disk), "trial-0")
    calls = _install(monkeypatch, storage)
    monkeypatch.setattr(session, "ensure_space", lambda path, need: None)
    folder = _checkpoint_folder(tmp_path, 3 * MiB)
    with pytest.raises(NoSpaceError) as info:
        session.report_checkpoint({"epoch": 1}, str(folder))
    err = info.value
    assert str(err) == expected(storage.experiment_fs_path, 3 * MiB + CHECKPOINT_MARGIN,
                                err.free)
    assert err.free < MiB and out_of_space(err.__cause__)
    assert len(calls) == 1 and calls[0]["name"].startswith("checkpoint_")
    assert not Path(storage.build_checkpoint_path_from_name(calls[0]["name"])).exists()


def test_with_room_the_checkpoint_is_uploaded_under_the_name_rank0_chose(tmp_path, small_disk,
                                                                        monkeypatch):
    disk = small_disk("8m")
    storage = StorageContext(str(disk), "trial-0")
    calls = _install(monkeypatch, storage)
    folder = _checkpoint_folder(tmp_path, 3 * MiB)
    session.report_checkpoint({"epoch": 1}, str(folder))
    copy = Path(storage.build_checkpoint_path_from_name(calls[0]["name"])) / STATE_FILE
    assert copy.stat().st_size == 3 * MiB


def test_cloud_or_unknown_storage_reports_as_before(tmp_path, monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace())  # no storage
    monkeypatch.setattr(ray.train, "report", lambda metrics, checkpoint=None:
                        calls.append((metrics, checkpoint)))
    folder = _checkpoint_folder(tmp_path, 10)
    session.report_checkpoint({"epoch": 1}, str(folder))
    session.report_checkpoint({"epoch": 1}, None)  # the other ranks
    assert [c[1] is None for c in calls] == [False, True]
    assert calls[0][1].path == str(folder)


# -- the same upload from a loop in the Tune trial's own process (TrialSession) --------------


def test_a_trial_process_refuses_an_upload_its_trial_folder_cannot_hold(tmp_path, small_disk,
                                                                        monkeypatch):
    from vidablate.train.session import PROGRESS_FILE

    from ..fakes import FakeTune

    trial = small_disk("2m") / "trial-0"
    fake = FakeTune(trial)
    fake.install(monkeypatch)
    folder = _checkpoint_folder(tmp_path, 3 * MiB)
    free = shutil.disk_usage(trial).free
    with pytest.raises(NoSpaceError) as info:
        session.TrialSession().report({"epoch": 1}, str(folder))
    progress = len((folder / PROGRESS_FILE).read_bytes())  # written beside the state file
    assert str(info.value) == expected(trial, 3 * MiB + progress + CHECKPOINT_MARGIN, free) == \
        f"no space left on {trial}: need 5 MiB, 2 free"
    assert fake.reports == [] and not list(trial.glob("checkpoint_*"))


def test_a_trial_process_removes_the_partial_copy_when_space_runs_out(tmp_path, small_disk,
                                                                      monkeypatch):
    from ..fakes import FakeTune

    trial = small_disk("2m") / "trial-0"
    fake = FakeTune(trial)
    fake.install(monkeypatch)
    monkeypatch.setattr(session, "ensure_space", lambda path, need: None)
    folder = _checkpoint_folder(tmp_path, 3 * MiB)
    with pytest.raises(NoSpaceError) as info:
        session.TrialSession().report({"epoch": 1}, str(folder))
    assert out_of_space(info.value.__cause__)
    assert not list(trial.glob("checkpoint_*"))  # the partial copy is gone
