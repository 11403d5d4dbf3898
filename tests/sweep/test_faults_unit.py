"""Robustness without a cluster: pre-flight errors before anything starts, a diverged trial
reported as failed (never as a number), one MLflow value per epoch when epochs repeat, a
finished trial replayed without training, and a damaged Tune state turned into advice."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray.train
from mlflow.tracking import MlflowClient
from ray.train.torch import TorchTrainer

from vidablate.config import ConfigError, ExperimentConfig
from vidablate.report.render import to_markdown
from vidablate.report.table import TrialOutcome, build_table
from vidablate.sweep.grid import _outcome
from vidablate.sweep.preflight import _redact, check_storage, check_tracking
from vidablate.sweep.runner import SweepSettings, _restore, private_token_file, run_sweep
from vidablate.sweep.space import SHIPPED_SPACES, TrialSpec, expand, load_space
from vidablate.sweep.tracking import (
    MLflowTrialCallback,
    SweepTracker,
    failure_reason,
    record_failures,
)
from vidablate.train.keys import DIVERGED_KEY
from vidablate.train.loop import train_loop_per_worker

from ..fakes import FakeTrain, resume_matches_uninterrupted, run_until_preempted


def _settings(tmp_path: Path, **kw) -> SweepSettings:
    return SweepSettings(**{"storage_path": str(tmp_path / "ray_results"),
                            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", **kw})


def _nothing_created(tmp_path: Path) -> None:
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def test_storage_that_is_not_a_writable_folder_fails_before_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="storage_path=.*not writable.*not a folder"):
        check_storage(str(blocker / "ray_results"))
    check_storage(str(tmp_path / "new" / "deeper"))  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="storage_path='nosuchscheme://bucket/x'"):
        check_storage("nosuchscheme://bucket/x")
    with pytest.raises(ConfigError, match="storage_path"):
        run_sweep("isclip_modules", settings=_settings(tmp_path,
                                                       storage_path=str(blocker / "r")))
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_mlflow_server_fails_in_seconds_without_credentials(tmp_path):
    with pytest.raises(ConfigError, match="does not answer") as err:
        check_tracking("http://user:secret@127.0.0.1:9")
    assert "secret" not in str(err.value) and "user:***@" in str(err.value)
    assert _redact("https://a:b@host/x") == "https://a:***@host/x"
    with pytest.raises(ConfigError, match="tracking_uri"):
        run_sweep("isclip_modules", settings=_settings(tmp_path,
                                                       tracking_uri="http://127.0.0.1:9"))
    _nothing_created(tmp_path)


def test_gpu_trial_on_a_machine_without_gpu_fails_before_ray(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match="trainer.use_gpu=true .* no CUDA GPU"):
        run_sweep("isclip_modules", overrides={"trainer": {"use_gpu": True}},
                  settings=_settings(tmp_path))
    _nothing_created(tmp_path)
    assert not ray.is_initialized()


def test_diverged_trial_is_a_failed_cell_with_its_reason():
    exp = ExperimentConfig().validate().to_dict()
    t = TrialSpec("baseline-s0", "baseline", 0, exp)
    reason = "train_loss is nan in epoch 2: the trial diverged"
    result = SimpleNamespace(metrics={DIVERGED_KEY: reason, "epoch": 2, "hm": float("nan")},
                             error=None)
    out = _outcome(t, result, {"epoch": 2.0})
    assert out.status == "diverged" and out.error == reason and out.metrics == {}
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    ok = TrialOutcome("sirm", 0, {"base_acc": 50.0, "novel_acc": 40.0, "hm": 44.4})
    table = build_table(space, [out, ok])
    row = next(r for r in table if r.name == "baseline")
    assert row.seeds_ok == 0 and reason in row.errors[0]
    text = to_markdown(space, table)
    assert "(failed)" in next(line for line in text.splitlines() if "Fine-tuned CLIP" in line)


def test_a_huge_learning_rate_diverges_and_stops_the_trial(tmp_path):
    exp = {"data": {"train_per_class": 2, "test_per_class": 1},
           "trainer": {"epochs": 3, "batch_size": 8, "num_workers": 0, "lr_new": 1e30,
                       "lr_visual": 1e30}}
    result = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": exp, "mlflow_run_id": None},
        scaling_config=ray.train.ScalingConfig(num_workers=0),
        run_config=ray.train.RunConfig(name="nan", storage_path=str(tmp_path)),
    ).fit()
    assert result.error is None
    assert "diverged" in result.metrics[DIVERGED_KEY] and "trainer.lr_new" in \
        result.metrics[DIVERGED_KEY]
    assert result.metrics["epoch"] < 3 and result.checkpoint is None


def _trial(key: str, last: dict | None = None):
    return SimpleNamespace(config={"trial": key}, last_result=last or {}, status="RUNNING")


def test_callback_logs_one_value_per_epoch_and_marks_divergence(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    specs = {"a": TrialSpec("a", "row", 0, {"trainer": {"epochs": 4}})}
    cb = MLflowTrialCallback(uri, "e", "sweep-1", "parent-1", specs, {"a": 4}, printer=False)
    trial = _trial("a")
    assert SweepTracker(uri, "e").find_child("sweep-1", "a") is None  # queued: no run yet
    cb.on_trial_start(0, [trial], trial)
    run = SweepTracker(uri, "e").find_child("sweep-1", "a")
    assert run is not None and client.get_run(run).info.status == "RUNNING"
    for epoch, loss in ((1, 3.0), (2, 2.0), (2, 2.5), (1, 9.0), (3, 1.0)):  # 2 epochs repeated
        cb.on_trial_result(0, [trial], trial, {"epoch": epoch, "train_loss": loss})
    history = client.get_metric_history(run, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    fresh = MLflowTrialCallback(uri, "e", "sweep-1", "parent-1", specs, {"a": 4},
                                printer=False)  # a restarted driver finds the same run
    fresh.on_trial_result(0, [trial], trial, {"epoch": 3, "train_loss": 7.0})
    fresh.on_trial_result(0, [trial], trial, {"epoch": 4, "train_loss": 0.5,
                                              DIVERGED_KEY: "train_loss is inf"})
    assert [m.step for m in client.get_metric_history(run, "train_loss")] == [1, 2, 3, 4]
    fresh.on_trial_complete(0, [trial], _trial("a", {DIVERGED_KEY: "train_loss is inf"}))
    finished = client.get_run(run)
    assert finished.info.status == "FAILED"
    assert finished.data.tags["vidablate.failure"] == "train_loss is inf"


def test_damaged_tune_state_gives_a_way_forward(tmp_path, ray_local):
    from ray import tune

    def trainable(config):
        tune.report({"x": 1})

    tune.Tuner(trainable, param_space={"a": tune.grid_search([1, 2])},
               run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path),
                                         verbose=0)).fit()
    state = next((tmp_path / "exp").glob("experiment_state-*.json"))
    state.write_text(state.read_text()[: len(state.read_text()) // 3])  # truncated mid-write
    with pytest.raises(ConfigError, match="cannot be read.*resume=false") as err:
        _restore(str(tmp_path / "exp"), trainable, SweepSettings(resume=True))
    assert "Traceback" not in str(err.value)
    json.dumps(str(err.value))  # one printable line of advice




def _experiment(epochs: int = 3) -> dict:
    return {"model": {"sirm": True, "sgam": True},
            "data": {"train_per_class": 2, "test_per_class": 1},
            "trainer": {"epochs": epochs, "batch_size": 4, "num_workers": 0,
                        "lr_visual": 1e-3, "lr_new": 1e-2, "preemption_check_every": 2}}


def test_preemption_saves_mid_epoch_and_the_restart_continues_exactly(tmp_path, monkeypatch):
    import torch

    from vidablate.train import loop
    from vidablate.train.checkpoint import STATE_FILE

    config = {"experiment": _experiment(), "mlflow_run_id": None}
    clean = FakeTrain(tmp_path / "clean")
    (tmp_path / "clean").mkdir()
    with monkeypatch.context() as m:
        clean.install(m)
        loop.train_loop_per_worker(config)

    # checks at steps 2, 4, 6, 8 of each 8-step epoch: the 6th is epoch 2, step 4
    (tmp_path / "run").mkdir()
    first = FakeTrain(tmp_path / "run", warn_at=6)
    run_until_preempted(loop, config, first, monkeypatch)
    assert first.reports[-1] == {"epoch": 1, "jit_checkpoint_step": 4}
    with first.latest.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 4) and len(state["partial"]) == 5

    second = FakeTrain(tmp_path / "run", resume=first.latest)
    resume_matches_uninterrupted(loop, config, second, clean, monkeypatch)


def test_a_finished_trial_restored_from_its_last_checkpoint_replays_without_training(
        tmp_path, monkeypatch):
    from vidablate.train import loop
    from vidablate.train.keys import REPLAYED_KEY

    config = {"experiment": _experiment(epochs=2), "mlflow_run_id": None}
    done = FakeTrain(tmp_path)
    with monkeypatch.context() as m:
        done.install(m)
        loop.train_loop_per_worker(config)
    again = FakeTrain(tmp_path, resume=done.latest)
    with monkeypatch.context() as m:
        again.install(m)
        m.setattr(loop, "train_batch", lambda *a: pytest.fail("must not train"))
        loop.train_loop_per_worker(config)
    assert len(again.reports) == 1 and again.reports[0][REPLAYED_KEY] is True
    assert again.reports[0]["hm"] == done.reports[-1]["hm"] and again.reports[0]["epoch"] == 2


def test_ray_token_file_becomes_private(tmp_path, monkeypatch):
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("t" * 64)
    token.chmod(0o644)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert private_token_file() == token
    assert token.stat().st_mode & 0o777 == 0o600
    assert private_token_file() is None  # already private: nothing to say
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    assert private_token_file() is None


RAY_ERROR = """Failure # 1 (occurred at 2026-12-02_07-24-43)
ray::ImplicitFunc.train() (pid=27307, ip=192.0.2.2, repr=run_trial)
  File "ray/train/v2/api/data_parallel_trainer.py", line 195, in fit
    raise result.error
ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 0 Error Snippet]:
  File "vidablate/errors.py", line 52, in ensure_space
    raise NoSpaceError(path, need, free)
vidablate.errors.NoSpaceError: no space left on /data/sw-train/baseline-s0: need 3 MiB, 0 free
"""


def test_failure_reason_is_the_innermost_error():
    assert failure_reason(RAY_ERROR) == \
        "NoSpaceError: no space left on /data/sw-train/baseline-s0: need 3 MiB, 0 free"
    assert failure_reason("ray.exceptions.RayTaskError(ValueError): bad\n") == \
        "RayTaskError: bad"
    assert failure_reason("something odd\n  at the end\n") == "at the end"
    denied = ("ray.train.ControllerError: Training failed due to controller error:\n"
              "When initiating multiple part upload for key 'a/b.json' in bucket 'x': AWS Error "
              "ACCESS_DENIED during CreateMultipartUpload operation: Access Denied\n")
    assert failure_reason(denied) == (
        "ControllerError: Training failed due to controller error: When initiating multiple "
        "part upload for key 'a/b.json' in bucket 'x': AWS Error ACCESS_DENIED during "
        "CreateMultipartUpload operation: Access Denied")


def test_failure_reasons_go_to_the_child_and_the_parent(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "e")
    parent, _ = tracker.parent_run("sw", {})
    t = expand_one()
    child = tracker.child_run("sw", parent, t)
    record_failures(tracker, "sw", parent, [(t.key, RAY_ERROR)])
    reason = "NoSpaceError: no space left on /data/sw-train/baseline-s0: need 3 MiB, 0 free"
    assert tracker.client.get_run(child).data.tags["vidablate.failure"] == reason
    assert tracker.client.get_run(parent).data.tags["vidablate.failure"] == \
        f"1 trial(s) failed; first {t.key}: {reason}"


def expand_one() -> TrialSpec:
    return expand(load_space(SHIPPED_SPACES / "isclip_modules.yaml"), seeds=[0])[0]
