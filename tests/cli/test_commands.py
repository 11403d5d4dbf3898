"""The ``vidablate`` command: dispatch, Hydra help, a row's merged config, multirun and a
non-editable install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from vidablate.cli import COMMANDS, main
from vidablate.sweep.space import shipped_spaces

VIDABLATE = [sys.executable, "-m", "vidablate"]


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)
    assert main(["no_such_command"]) == 2


def test_ablate_help_lists_the_spaces_and_settings(tmp_path):
    out = subprocess.run(VIDABLATE + ["ablate", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in shipped_spaces():
        assert f"  {name} " in out.stdout
    assert "IS-CLIP Table II: ablation of SIRM and SGAM" in out.stdout
    for setting in ("space=isclip_modules", "seeds=null", "dry_run=false", "show_row=null",
                    "tracking_uri=null"):
        assert setting in out.stdout
    assert "$MLFLOW_TRACKING_URI" in out.stdout  # the template's $ survived substitution
    assert "recipe: auto" in out.stdout and "model: tiny, vitb16" in out.stdout


def test_show_row_prints_the_merged_config(tmp_path):
    out = subprocess.run(VIDABLATE + ["ablate", "space=isclip_modules", "show_row=sirm_sgam",
                                      "trainer.epochs=2", "seeds=[4]"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["row"] == "sirm_sgam" and cfg["seed"] == 4
    assert cfg["model"]["sirm"] is True and cfg["model"]["sgam"] is True  # the row's toggles
    assert cfg["trainer"]["epochs"] == 2  # the command line beats the space's fixed block
    assert cfg["trainer"]["seed"] == 4
    bad = subprocess.run(VIDABLATE + ["ablate", "space=isclip_modules", "show_row=nope"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_multirun_runs_every_job_and_exits_with_the_worst_code(tmp_path):
    # rows=[baseline] exists in isclip_modules only: the middle job fails, the others run
    out = subprocess.run(
        VIDABLATE + ["ablate", "-m", "space=isclip_modules,isclip_sensors,isclip_modules",
                     "dry_run=true", "seeds=[0]", "rows=[baseline]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.stdout.count("space isclip_modules: 1 rows x 1 seeds = 1 trials") == 2, out.stderr
    assert "isclip_sensors.yaml: rows=['baseline'] not in the space" in out.stdout, out.stdout
    assert out.returncode == 2
    assert not (tmp_path / "mlflow.db").exists()


def test_multirun_with_an_unknown_space_runs_nothing(tmp_path):
    out = subprocess.run(
        VIDABLATE + ["ablate", "-m", "space=isclip_sensors,no_such_space", "dry_run=true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stdout.startswith("error: space='no_such_space': no such search space"), out.stdout
    assert "trials" not in out.stdout


def test_jobs_scripts_are_the_same_commands():
    for script, module in (("ablate.py", "vidablate.cli.ablate"),
                           ("cache_features.py", "vidablate.cli.ablate"),
                           ("pretrain_tiny_clip.py", "vidablate.cli.pretrain"),
                           ("prepare_data.py", "vidablate.data.prepare")):
        text = (REPO / "jobs" / script).read_text()
        assert f"from {module} import" in text
        assert "argparse" not in text and "hydra.main" not in text  # only the package parses


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the package installed from a wheel (non-editable); its dependencies
    come from this venv's site-packages through a .pth file, so nothing is downloaded."""
    root = tmp_path_factory.mktemp("install")
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(root / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert wheel.returncode == 0, wheel.stderr
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    (whl,) = (root / "dist").glob("vidablate-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                              "install", "--no-deps", "-q", str(whl)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    return venv


def test_non_editable_install_runs_a_shipped_table(installed, tmp_path):
    where = subprocess.run([str(installed / "bin/python"), "-c",
                            "import vidablate; print(vidablate.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert str(installed) in where.stdout, where.stdout + where.stderr  # not the checkout
    out = subprocess.run([str(installed / "bin/vidablate"), "ablate", "space=isclip_modules",
                          "dry_run=true", "seeds=[0]"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "space isclip_modules: 4 rows x 1 seeds = 4 trials" in out.stdout
