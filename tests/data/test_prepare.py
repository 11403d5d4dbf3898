"""The prepare_data command line: converters + validation, counts, exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

# isort: split
from tests.conftest import REPO
from vidablate.data.imu import read_imu
from vidablate.data.manifest import (
    manifest_records,
    read_class_names,
    read_manifest,
    resolve_video,
)
from vidablate.data.prepare import main
from vidablate.data.video import write_video

SCRIPT = [sys.executable, str(REPO / "jobs" / "prepare_data.py")]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic export written through the CLI (2 classes x 2 clips per split)."""
    out = tmp_path_factory.mktemp("synthetic")
    code = main(["synthetic", "--out", str(out), "--num-classes", "2", "--train-per-class", "2",
                 "--test-per-class", "1", "--splits", "train,test"])  # fmt: skip
    assert code == 0
    return out


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(synthetic, tmp_path):
    clean = _run("validate", str(synthetic / "train.parquet"), "--class-names",
                 str(synthetic / "classnames.csv"), "--imu")  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.strip() == f"{synthetic / 'train.parquet'}: no problems in 4 rows"

    problems = _run("validate", str(synthetic / "train.parquet"), "--num-classes", "1",
                    "--no-decode")  # fmt: skip
    assert problems.returncode == 1
    assert "2 problem(s) in 4 rows: unknown label: 2 (row " in problems.stdout

    missing = _run("validate", str(tmp_path / "none.parquet"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'none.parquet'}: manifest file not found"
    assert "Traceback" not in missing.stderr and not missing.stdout


def test_synthetic_subcommand_counts(synthetic, capsys):
    rows = manifest_records(read_manifest(synthetic / "test.parquet"))
    assert [r["split"] for r in rows] == ["test", "test"]
    assert read_imu(resolve_video(rows[0]["imu"], synthetic)).values.shape == (8 * 16, 6)
    assert main(["validate", str(synthetic / "test.parquet"), "--no-decode"]) == 0
    assert capsys.readouterr().out.strip().endswith("no problems in 2 rows")


def test_txt_subcommand_rebases_paths_and_validates(synthetic, tmp_path, capsys):
    lst = tmp_path / "lists" / "train_split1.txt"
    lst.parent.mkdir()
    lst.write_text("".join(f"{r['video']} {r['label']}\n"
                           for r in manifest_records(read_manifest(synthetic / "train.parquet"))))
    out = tmp_path / "manifests"
    code = main(["txt", str(lst), "--root", str(synthetic), "--class-names",
                 str(synthetic / "classnames.csv"), "--out", str(out), "--split", "train"])
    captured = capsys.readouterr().out
    assert code == 0, captured
    written = out / "train_split1.parquet"
    assert f"wrote {written}: 4 clips, 2 classes (of 2)" in captured
    assert "no problems in 4 rows" in captured
    first = manifest_records(read_manifest(written))[0]["video"]
    assert first.startswith(f"{synthetic}/videos/train/")  # outside the manifest's folder
    assert resolve_video(first, out).is_file()


def test_folder_and_csv_subcommands(tmp_path, capsys):
    root = tmp_path / "videos"
    frames = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    for rel in ("run/a.mp4", "sit_down/b.mp4"):
        write_video(root / rel, frames + 40, fps=10.0)
    code = main(["folder", "--root", str(root), "--out", str(root / "all.parquet")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert read_class_names(root / "classnames.csv") == ["run", "sit down"]
    assert [r["video"] for r in manifest_records(read_manifest(root / "all.parquet"))] == [
        "run/a.mp4", "sit_down/b.mp4"]  # under the manifest's folder: relative
    csv_file = tmp_path / "val.csv"
    csv_file.write_text("path,label\nrun/a.mp4,0\nsit_down/missing.mp4,1\n")
    code = main(["csv", str(csv_file), "--root", str(root), "--class-names",
                 str(root / "classnames.csv"), "--out", str(root)])
    out = capsys.readouterr().out
    assert code == 1  # written, but validation finds the missing file
    assert "1 problem(s) in 2 rows: missing video: 1 (row 1: " in out
    assert (root / "val.parquet").is_file()


def test_uestc_subcommand_and_errors(tmp_path, capsys):
    root = tmp_path / "UESTC-MMEA-CL"
    clip = "2_downstairs_2020_12_15_15_58_48"
    for n, name in enumerate(["upstairs", "downstairs"], start=1):
        (root / "sensor" / f"{n}_{name}").mkdir(parents=True)
    write_video(root / "video" / "2_downstairs" / f"{clip}.mp4",
                np.zeros((5, 32, 32, 3), np.uint8), fps=25.0)  # fmt: skip
    (root / "sensor" / "2_downstairs" / f"{clip}.csv").write_text("0,0,16384,0,0,0\n" * 5)
    (tmp_path / "train.txt").write_text(f"yourdataset_path/data/2_downstairs/{clip} 5 5 1\n")
    out = tmp_path / "manifests" / "train.parquet"
    code = main(["uestc", str(tmp_path / "train.txt"), "--root", str(root), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert read_class_names(out.parent / "classnames.csv") == ["upstairs", "downstairs"]
    row = manifest_records(read_manifest(out))[0]
    assert row["imu"] == f"imu/2_downstairs/{clip}.csv"  # converted next to the manifest
    np.testing.assert_allclose(read_imu(out.parent / row["imu"]).values[:, 2], 1.0)

    assert main(["txt", str(tmp_path / "train.txt"), "--root", str(root), "--class-names",
                 str(tmp_path / "absent.csv"), "--out", str(out)]) == 2  # fmt: skip
    assert main(["txt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: {tmp_path / 'absent.csv'}: class-name file not found"
    assert err[1].startswith("error: the following arguments are required") and len(err) == 2
