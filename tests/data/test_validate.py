"""Manifest validation: every problem kind reported with counts and examples, the IMU flag,
label consistency without class names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

# isort: split
from vidablate.data.imu import write_imu
from vidablate.data.manifest import (
    ManifestError,
    manifest_records,
    read_class_names,
    read_manifest,
    resolve_video,
    write_manifest,
)
from vidablate.data.validate import ValidationReport, validate_manifest

NAMES = ["abseiling", "brush hair", "cartwheel"]


# -------------------------------------------------------------------------- validation


def test_every_problem_kind_is_reported_with_counts(tmp_path, exported_synthetic):
    out, paths = exported_synthetic
    good = manifest_records(read_manifest(paths["train"]))[0]
    video, imu = str(resolve_video(good["video"], out)), str(resolve_video(good["imu"], out))
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "bad_imu.csv").write_text("not,an,imu\n")
    t = (np.arange(32) + 0.5) / 128.0  # 0.25 s of IMU for a 1 s video
    short = write_imu(tmp_path / "short.csv", t, np.zeros((32, 6), np.float32))
    name = good["label_name"]
    label = good["label"]

    def row(**kw):
        return {"video": video, "label": label, "label_name": name, "imu": imu} | kw

    rows = [
        row(),  # 0 clean
        row(video="missing.mp4"),  # 1
        row(video="broken.mp4"),  # 2
        row(label=9, label_name="nine"),  # 3 label >= classes
        row(label_name="wrong name"),  # 4
        row(imu="nope.csv"),  # 5
        row(imu="bad_imu.csv"),  # 6
        row(imu=str(short)),  # 7 length mismatch
        row(start=0.5, end=0.25),  # 8 start >= end
        row(start=-1.0, end=0.5),  # 9 negative
        row(start=0.0, end=3.0),  # 10 beyond 1 s + 1 frame
        row(start=0.25, end=0.75),  # 11 fine: the 1 s IMU covers it
        row(video="missing2.mp4", label=7, label_name="seven", imu="nope2.csv"),  # 12 three
    ]
    manifest = write_manifest(rows, tmp_path / "m.parquet")
    names = read_class_names(paths["classnames"])
    report = validate_manifest(manifest, class_names=names, workers=3)
    counts = {kind: len(msgs) for kind, msgs in report.problems.items()}
    assert counts == {
        "missing video": 2, "unreadable video": 1, "unknown label": 3, "missing imu": 2,
        "unreadable imu": 1, "imu/video length mismatch": 1, "bad time span": 3,
    }  # fmt: skip
    assert report.checked == 13 and report.count == 13 and not report.ok
    p = report.problems
    assert p["missing video"][0] == f"row 1: {tmp_path / 'missing.mp4'}: file not found"
    assert p["unreadable video"][0].startswith(f"row 2: {tmp_path / 'broken.mp4'}: ")
    assert [m.split(":")[0] for m in p["unknown label"]] == ["row 3", "row 4", "row 12"]
    assert "label_name 'wrong name' but class" in p["unknown label"][1]
    assert p["missing imu"][0] == f"row 5: {tmp_path / 'nope.csv'}: file not found"
    assert p["unreadable imu"][0].startswith("row 6: ") and "line 1" in p["unreadable imu"][0]
    assert "IMU covers 0.250 s, the video 1.000 s" in p["imu/video length mismatch"][0]
    assert [m.split(":")[0] for m in p["bad time span"]] == ["row 8", "row 9", "row 10"]
    summary = report.summary(examples=1)
    assert summary.startswith(f"{manifest}: 13 problem(s) in 13 rows: missing video: 2 (row 1: ")
    assert "unknown label: 3 (row 3: " in summary and ", ... 2 more)" in summary
    with pytest.raises(ManifestError) as err:
        report.raise_for_problems()
    assert str(err.value) == report.summary()
    # Same findings on one thread; without decoding the broken file only has to exist.
    assert validate_manifest(manifest, class_names=names, workers=1).problems == report.problems
    assert "unreadable video" not in validate_manifest(manifest, class_names=names, decode=False,
                                                       imu=False).problems  # fmt: skip


def test_imu_flag_and_label_consistency_without_names(tmp_path, exported_synthetic):
    out, paths = exported_synthetic
    rows = [{k: v for k, v in r.items() if k != "imu"}
            for r in manifest_records(read_manifest(paths["test"]))]  # fmt: skip
    rows[1]["label_name"] = "renamed"
    rows[1]["label"] = rows[0]["label"]
    table = pa.Table.from_pylist(rows)
    assert validate_manifest(table, root=out, decode=False).problems.keys() == {"unknown label"}
    required = validate_manifest(table, root=out, decode=False, imu=True)
    assert len(required.problems["missing imu"]) == 8  # imu=True without an imu column
    assert "the manifest has no imu column" in required.problems["missing imu"][0]
    assert isinstance(required, ValidationReport)
    with pytest.raises(ManifestError, match="4 class names but num_classes=5"):
        validate_manifest(table, root=out, class_names=NAMES + ["x"], num_classes=5)
