"""The Hydra CLI: argument mapping and the dry run (no Ray, no training)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vidablate.cli.ablate import run
from vidablate.sweep.cli import explicit_overrides


def test_explicit_overrides_take_only_section_keys():
    cfg = {"trainer": {"epochs": 2, "lr_new": 0.1}, "model": {"sirm": True}, "space": "x"}
    got = explicit_overrides(cfg, ["space=x", "trainer.epochs=2", "model=vitb16",
                                   "+model.sirm=true"])
    assert got == {"trainer": {"epochs": 2}, "model": {"sirm": True}}


def test_dry_run_lists_trials_without_running(ablate_cmd, tmp_path):
    out = subprocess.run(ablate_cmd + ["space=isclip_sensors", "dry_run=true", "seeds=[0,1]"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "4 rows x 2 seeds = 8 trials" in out.stdout
    assert "gyro-s1" in out.stdout
    assert not (tmp_path / "mlflow.db").exists()  # nothing was tracked or run


def test_bad_toggle_on_command_line_fails_before_ray(ablate_cmd, tmp_path):
    out = subprocess.run(ablate_cmd + ["space=isclip_modules", "trainer.batch_size=0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "trainer.batch_size" in out.stdout
    assert not (tmp_path / "ray_results").exists()


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("args,expect", [
    (["space=no_such_table"], "space='no_such_table': no such search space"),
    (["space=isclip_modules", "+model.no_such_toggle=true"], "model has no field 'no_such_toggle'"),
    (["space=isclip_modules", "data.dataset=hmdb51"], "data.train_manifest"),
    (["space=isclip_modules", "storage_path=/dev/null/ray"], "storage_path='/dev/null/ray' is not"),
    (["space=isclip_modules", "tracking_uri=http://127.0.0.1:9"], "does not answer"),
    pytest.param(["space=isclip_modules", "trainer.use_gpu=true"], "no CUDA GPU",
                 marks=pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")),
])
def test_preflight_errors_are_one_line_exit_2_and_start_nothing(ablate_cmd, tmp_path, args,
                                                                 expect):
    out = subprocess.run(ablate_cmd + args, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no trial directory


@pytest.mark.parametrize("args,expect", [
    (["trainer.epochs=abc"], "trainer.epochs=abc on the command line: trainer.epochs must be an "
                             "integer"),
    (["trainer.lr_new=-1"], "trainer.lr_new=-1 on the command line: trainer.lr_new must be >= 0"),
    (["trainer.momentum=1.5"], "trainer.momentum=1.5 on the command line: trainer.momentum must "
                               "be in [0, 1)"),
    (["seeds=[]"], "seeds=[] on the command line: give at least one seed"),
    (["+foo.bar=1"], "+foo.bar=1 on the command line: unknown key 'foo.bar'"),
    (["foo.bar=1"], "foo.bar=1 on the command line: unknown key 'foo.bar'"),
    (["trainer.lr=0"], "trainer.lr=0 on the command line: trainer has no field 'lr'"),
    (["spaec=x"], "no setting 'spaec' (did you mean space?)"),
    (["model=vitx"], "no model option 'vitx'; options: tiny, vitb16"),
    (["trainer.epochs=[1"], "command line: no viable alternative at input '[1'"),
    (["-m", "space=isclip_modules,nope"], "space='nope': no such search space"),
    (["model.sirm=true"], "model.sirm=true on the command line: model.sirm is what the table "
                          "varies (set by baseline, sirm, sgam, sirm_sgam)"),
])
def test_command_line_mistakes_are_one_error_line_exit_2(args, expect, capsys, tmp_path,
                                                         monkeypatch):
    """In-process (no Ray, no subprocess): every mistake is caught before anything runs and
    blamed on the command line, Hydra's own override errors included."""
    monkeypatch.chdir(tmp_path)
    code = run(["space=isclip_modules", *args] if not any(a.startswith("space=") for a in args)
               else args)
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.strip()]
    assert code == 2, out.out + out.err
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("arg", ["foo.bar=1", "space=no_such_table", "trainer.lr_new=-1",
                                 "model.sirm=true"])
def test_errors_come_before_ray_mlflow_and_torchvision_load(arg, tmp_path):
    """The checks answer before the heavy imports (about 3 s instead of 10 s on 2 cores)."""
    code = ("import sys; from vidablate.cli.ablate import run; c = run(sys.argv[1:]); "
            "print(c, sorted(m for m in ('ray', 'mlflow', 'torchvision', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, arg], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.splitlines()[-1] == "2 []", out.stdout + out.stderr


def test_a_setting_some_rows_set_themselves_is_a_note(capsys, tmp_path, monkeypatch):
    """``trainer.epochs=1`` with a zero-shot row (``epochs: 0``) applies to the other rows."""
    monkeypatch.chdir(tmp_path)
    code = run(["space=motionprompt_key_designs", "rows=[clip,baseline]", "seeds=[0]",
                "trainer.epochs=1", "dry_run=true"])
    out = capsys.readouterr().out
    assert code == 0 and "note: trainer.epochs from the command line does not apply to row(s) " \
        "clip: they set it themselves" in out, out
    assert "baseline-s0              1 epochs" in out  # the other row takes it
    code = run(["space=motionprompt_key_designs", "rows=[clip]", "seeds=[0]",
                "trainer.epochs=1", "dry_run=true"])
    out = capsys.readouterr().out
    assert code == 2 and "error: trainer.epochs=1 on the command line: trainer.epochs is what " \
        "the table varies (set by clip)" in out, out
