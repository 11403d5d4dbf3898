"""Converters to manifests: path-label lists, csv, class folders, UESTC-MMEA-CL (sensor csv
units, video and frame-folder layouts) and the synthetic export."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import Image

# isort: split
from tests.conftest import EXPORT_SPEC
from tests.data.videos import random_frames
from vidablate.data.converters import (
    from_folder_tree,
    from_path_label_csv,
    from_path_label_txt,
    from_uestc_mmea_cl,
    read_uestc_sensor_csv,
    uestc_mmea_cl_class_names,
)
from vidablate.data.frames import FrameFolder, open_clip_source
from vidablate.data.imu import imu_for_frames, read_imu
from vidablate.data.manifest import (
    ManifestError,
    manifest_records,
    read_class_names,
    read_manifest,
    resolve_video,
)
from vidablate.data.synthetic import SyntheticSpec, generate_split
from vidablate.data.validate import validate_manifest
from vidablate.data.video import VideoFile, write_video

NAMES = ["abseiling", "brush hair", "cartwheel"]
SPEC = SyntheticSpec(**EXPORT_SPEC)  # the set the exported_synthetic fixture writes


# --------------------------------------------------------------------- converters


def test_txt_list_with_and_without_num_frames(tmp_path):
    two = tmp_path / "two.txt"
    two.write_text("# X-CLIP list\nabseiling/v1.mp4 0\n\nbrush_hair/v2.mp4 1\n")
    three = tmp_path / "three.txt"
    three.write_text(f"{tmp_path}/rgb/v1 120 2\nrgb/v2 64 0\n")
    t2 = from_path_label_txt(two, root=tmp_path, class_names=NAMES, split="train")
    assert t2.to_pydict() == {
        "video": ["abseiling/v1.mp4", "brush_hair/v2.mp4"], "label": [0, 1],
        "label_name": ["abseiling", "brush hair"], "split": ["train", "train"],
    }  # fmt: skip
    t3 = from_path_label_txt(three, root=tmp_path, class_names=NAMES)
    assert t3.column("video").to_pylist() == ["rgb/v1", "rgb/v2"]  # absolute under root: relative
    assert t3.column("label_name").to_pylist() == ["cartwheel", "abseiling"]


def test_txt_list_reports_every_bad_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a.mp4 0\nb.mp4 7\nc.mp4\nd.mp4 x 1\ne.mp4 one\n")
    with pytest.raises(ManifestError) as err:
        from_path_label_txt(path, class_names=NAMES)
    msg = str(err.value)
    assert msg.startswith(f"{path}: 4 problem(s)")
    for expect in ("line 2: label 7 outside 0..2", "line 3: 1 fields", "line 4: num_frames 'x'",
                   "line 5: label 'one' is not an integer"):  # fmt: skip
        assert expect in msg


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "h.csv").write_text("path,label\na.mp4,2\nb.mp4,0\n")
    (tmp_path / "n.csv").write_text("a.mp4,2\nb.mp4,0\n")
    (tmp_path / "s.csv").write_text("a.mp4 2\nb.mp4   0\n")  # PySlowFast Kinetics: space
    for name, sep in (("h.csv", ","), ("n.csv", ","), ("s.csv", " ")):
        table = from_path_label_csv(tmp_path / name, class_names=NAMES, sep=sep)
        assert table.column("video").to_pylist() == ["a.mp4", "b.mp4"]
        assert table.column("label").to_pylist() == [2, 0]
    (tmp_path / "bad.csv").write_text("path,label\na.mp4,2\nb.mp4,zero\n")
    with pytest.raises(ManifestError, match=r"bad\.csv: 1 problem\(s\): line 3: label 'zero'"):
        from_path_label_csv(tmp_path / "bad.csv", class_names=NAMES)


def test_folder_tree(tmp_path):
    for rel in ("walk/a.mp4", "walk/sub/b.AVI", "jump_rope/c.mkv", "jump_rope/notes.txt",
                ".hidden/d.mp4", "empty_class/readme.md"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    table, names = from_folder_tree(tmp_path)
    assert names == ["empty class", "jump rope", "walk"]
    assert table.to_pydict() == {
        "video": ["jump_rope/c.mkv", "walk/a.mp4", "walk/sub/b.AVI"], "label": [1, 2, 2],
        "label_name": ["jump rope", "walk", "walk"],
    }  # fmt: skip
    with pytest.raises(ManifestError, match="no class folders"):
        from_folder_tree(tmp_path / "empty_class")


# -------------------------------------------------------------------- UESTC-MMEA-CL


CLIP_A = "1_upstairs_2020_12_15_15_58_48"
CLIP_B = "32_watch_TV_2022_05_05_16_05_51"


def _uestc_tree(root, *, frames: bool = False):
    """A UESTC-MMEA-CL-shaped dataset: class folders 1..32 (two with clips), raw sensor csvs."""
    for n in range(1, 33):
        name = {1: "upstairs", 32: "watch_TV"}.get(n, f"class{n}")
        (root / "video" / f"{n}_{name}").mkdir(parents=True)
        (root / "sensor" / f"{n}_{name}").mkdir(parents=True)
    for folder, clip in (("1_upstairs", CLIP_A), ("32_watch_TV", CLIP_B)):
        if frames:
            for i in range(4):
                path = root / "frames" / folder / clip / f"{i + 1:06d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(random_frames(1, 16, i)[0]).save(path)
        else:
            write_video(root / "video" / folder / f"{clip}.mp4", random_frames(4, 32), fps=25.0)
        # 4 rows at 25 Hz = 0.16 s, like the 4 frames at 25 fps.
        raw = "16384,0,-8192,164,-1640,0\n" + "0,16384,0,0,0,16.4\n" * 3
        (root / "sensor" / folder / f"{clip}.csv").write_text(raw)


def test_uestc_sensor_units(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("16384,-16384,8192,164,-1640,16.4\n0,0,0,0,0,0\n")
    stream = read_uestc_sensor_csv(path)
    np.testing.assert_allclose(stream.values[0, :3], [1.0, -1.0, 0.5])  # 16384 counts per g
    deg = math.pi / 180  # 16.4 counts per deg/s -> rad/s
    np.testing.assert_allclose(stream.values[0, 3:], [10 * deg, -100 * deg, 1 * deg], rtol=1e-6)
    np.testing.assert_allclose(stream.t, [0.5 / 25, 1.5 / 25])  # 25 Hz, row k at (k + 0.5) / rate
    half = read_uestc_sensor_csv(path, acc_sensitivity=8192, rate_hz=50)
    np.testing.assert_allclose(half.values[0, :3], [2.0, -2.0, 1.0])
    np.testing.assert_allclose(half.t, [0.01, 0.03])
    path.write_text("1,2,3,4,5\n")
    with pytest.raises(ValueError, match=r"s\.csv: line 1: 5 columns, expected 6"):
        read_uestc_sensor_csv(path)


@pytest.mark.parametrize("frames", [False, True])
def test_uestc_converter_video_and_frame_folders(tmp_path, frames):
    root = tmp_path / "UESTC-MMEA-CL"
    _uestc_tree(root, frames=frames)
    lst = tmp_path / "train.txt"
    lst.write_text(  # the authors' absolute paths and the released "yourdataset_path" form
        f"/home/amax/x/dataset/data/1_upstairs/{CLIP_A} 4 4 0\n"
        f"yourdataset_path/data/32_watch_TV/{CLIP_B} 4 4 31\n"
    )
    table = from_uestc_mmea_cl(root, lst, imu_dir=tmp_path / "imu", split="train",
                               frames_dir="frames" if frames else None)  # fmt: skip
    rows = manifest_records(table)
    assert [r["label"] for r in rows] == [0, 31]
    assert [r["label_name"] for r in rows] == ["upstairs", "watch TV"]
    expected = f"frames/1_upstairs/{CLIP_A}" if frames else f"video/1_upstairs/{CLIP_A}.mp4"
    assert rows[0]["video"] == expected and rows[0]["split"] == "train"
    stream = read_imu(rows[1]["imu"])  # converted, project units
    np.testing.assert_allclose(stream.values[0], [1, 0, -0.5, 10 * math.pi / 180,
                                                  -100 * math.pi / 180, 0], rtol=1e-6)  # fmt: skip
    report = validate_manifest(table, root=root, class_names=uestc_mmea_cl_class_names(root),
                               fps=25.0, imu=True)  # fmt: skip
    assert report.ok, report.summary()
    with open_clip_source(resolve_video(rows[0]["video"], root), fps=25.0) as src:
        assert isinstance(src, FrameFolder if frames else VideoFile)
        assert src.num_frames == 4 and src.fps == pytest.approx(25.0)


def test_uestc_label_check_missing_sensor_and_bare_names(tmp_path):
    root = tmp_path / "d"
    _uestc_tree(root)
    (root / "sensor" / "32_watch_TV" / f"{CLIP_B}.csv").unlink()
    lst = tmp_path / "test.txt"
    lst.write_text(f"{CLIP_A}.mp4 0\n32_watch_TV/{CLIP_B} 31\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = from_uestc_mmea_cl(root, lst, imu_dir=tmp_path / "imu")
    assert any("1 sensor file(s) not converted" in str(w.message) for w in caught)
    report = validate_manifest(table, root=root, decode=False)
    assert list(report.problems) == ["missing imu"] and "row 1" in report.problems["missing imu"][0]
    lst.write_text(f"1_upstairs/{CLIP_A} 4 4 5\n")
    with pytest.raises(ManifestError, match="line 1: label 5 but class folder '1_upstairs'"):
        from_uestc_mmea_cl(root, lst, imu_dir=tmp_path / "imu")


# ------------------------------------------------------------------ synthetic export


def test_export_synthetic_round_trip(exported_synthetic):
    out, paths = exported_synthetic
    assert set(paths) == {"train", "test", "classnames"}
    assert read_class_names(paths["classnames"]) == [
        "red square moving left", "red square moving right", "green circle moving up",
        "green circle moving down",
    ]  # fmt: skip
    data = generate_split(SPEC, "test")
    rows = manifest_records(read_manifest(paths["test"]))
    assert [r["label"] for r in rows] == data["label"].tolist() and len(rows) == 8
    errors = []
    for i, row in enumerate(rows):
        with VideoFile(resolve_video(row["video"], out)) as video:
            assert (video.num_frames, video.fps) == (8, pytest.approx(8.0))
            decoded = video.get(np.arange(8)).astype(np.float32)
        errors.append([np.abs(decoded - clip).mean() for clip in data["video"]])
        stream = read_imu(resolve_video(row["imu"], out))
        assert stream.rate_hz == pytest.approx(SPEC.imu_rate * 8.0)
        np.testing.assert_allclose(imu_for_frames(stream, np.arange(8) / 8.0, 8.0, SPEC.imu_rate),
                                   data["imu"][i], atol=1e-6)  # fmt: skip
    errors = np.array(errors)
    assert errors.diagonal().max() < 10  # H.264 at crf 18 on 32x32 noisy frames
    assert (errors.diagonal() * 3 < np.where(np.eye(8, dtype=bool), np.inf, errors).min(1)).all()


def test_exported_manifest_validates_clean(exported_synthetic):
    out, paths = exported_synthetic
    for split in ("train", "test"):
        report = validate_manifest(paths[split], class_names=paths["classnames"], imu=True)
        assert report.ok and report.checked == 8
        assert report.summary() == f"{paths[split]}: no problems in 8 rows"
        report.raise_for_problems()  # no error
