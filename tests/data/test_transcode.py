"""Re-encoding for sparse sampling: same frames in the same order (an edit list's hidden frames
left out), the short side and keyframe interval asked for, the manifest rewritten with its
labels, IMU files and spans, failures listed, and an interrupted run's finished files kept."""

from __future__ import annotations

import av
import numpy as np
import pytest

from vidablate.data import manifest as mf
from vidablate.data.prepare import main
from vidablate.data.transcode import Encoding, target_size, transcode_manifest, transcode_video
from vidablate.data.video import VideoDecodeError, VideoFile

from .videos import cut_with_edit_list, index_frame, read_indices, write_indexed, write_noise


def _keyframes(path) -> list[int]:
    """Frame indices (presentation order) of the keyframes."""
    with av.open(str(path)) as c:
        packets = sorted((p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size)
    return [i for i, (_, key) in enumerate(packets) if key]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """60 index pictures, 48x96, keyframes every 12 frames with B-frames."""
    return write_indexed(tmp_path_factory.mktemp("src") / "indexed.mp4", 60, gop=12)


def test_target_size_keeps_aspect_never_upscales_and_stays_even():
    assert target_size(720, 1280, 256) == (256, 456)
    assert target_size(1280, 720, 256) == (456, 256)
    assert target_size(200, 340, 256) == (200, 340)  # already smaller
    assert target_size(255, 341, 0) == (256, 340)  # kept, rounded to even for yuv420p
    for bad in ({"short_side": 255}, {"gop": 0}, {"crf": 60}):
        with pytest.raises(ValueError, match=next(iter(bad)).replace("_", " ")):
            Encoding(**bad)


def test_same_frames_in_order_at_the_new_size_and_keyframe_interval(indexed, tmp_path):
    out = tmp_path / "o.mp4"
    info = transcode_video(indexed, out, Encoding(short_side=32, gop=5))
    assert info == {"frames": 60, "height": 32, "width": 64, "fps": 25.0}
    with VideoFile(out, "pyav") as v:
        assert (v.num_frames, v.height, v.width, v.fps) == (60, 32, 64, 25.0)
        assert read_indices(v.get(np.arange(60))) == list(range(60))
    assert _keyframes(out) == list(range(0, 60, 5))  # the source's keyframes (every 12) gone
    assert not [p for p in tmp_path.iterdir() if p.name != "o.mp4"]  # no temporary left


def test_an_edit_list_cut_keeps_only_its_shown_frames(indexed, tmp_path):
    cut = cut_with_edit_list(indexed, tmp_path / "cut.mp4", first_shown=15)
    out = tmp_path / "o.mp4"
    assert transcode_video(cut, out, Encoding(short_side=0, gop=8))["frames"] == 45
    with VideoFile(out, "pyav") as v:
        assert read_indices(v.get(np.arange(v.num_frames))) == list(range(15, 60))


def test_unreadable_source_names_it_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video\n" * 100)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        transcode_video(bad, tmp_path / "out" / "bad.mp4")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.fixture()
def dataset(tmp_path, indexed):
    """A manifest of two videos (one in a subfolder), a frame folder, a broken file, with IMU
    paths and a clip span."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.mp4").write_bytes(indexed.read_bytes())
    write_noise(root / "sub" / "b.avi")
    frames = root / "frames_c"
    frames.mkdir()
    for i in range(4):
        av.VideoFrame.from_ndarray(index_frame(i), format="rgb24").to_image().save(
            frames / f"{i:05d}.jpg")
    (root / "broken.mp4").write_text("nope")
    (root / "imu.npz").write_bytes(b"imu")
    rows = [{"video": "a.mp4", "label": 0, "label_name": "x", "imu": "imu.npz",
             "start": 0.4, "end": 2.0},
            {"video": "sub/b.avi", "label": 1, "label_name": "y"},
            {"video": "frames_c", "label": 1, "label_name": "y"},
            {"video": "broken.mp4", "label": 0, "label_name": "x"}]
    return mf.write_manifest(rows, root / "train.parquet")


def test_manifest_rewritten_failures_listed_and_a_rerun_keeps_finished_files(dataset, tmp_path):
    out = tmp_path / "small"
    report = transcode_manifest(dataset, out, enc=Encoding(short_side=32, gop=4), workers=2,
                                log=None)
    assert (report.encoded, report.reused, report.folders) == (2, 0, 1)
    assert [src.endswith("broken.mp4") for src, _ in report.failed] == [True]
    assert "broken.mp4" in report.summary() and "1 failed" in report.summary()
    rows = mf.manifest_records(mf.read_manifest(out / "train.parquet"))
    assert [r["video"] for r in rows] == ["a.mp4", "sub/b.mp4",
                                          str(dataset.parent / "frames_c")]
    assert [(r["label"], r["label_name"]) for r in rows] == [(0, "x"), (1, "y"), (1, "y")]
    assert (rows[0]["start"], rows[0]["end"]) == (0.4, 2.0)
    assert mf.resolve_video(rows[0]["imu"], out) == dataset.parent / "imu.npz"
    with VideoFile(out / "sub" / "b.mp4", "pyav") as v, \
            VideoFile(dataset.parent / "sub" / "b.avi", "pyav") as src:
        assert (v.num_frames, v.height) == (src.num_frames, 32)
    stamp = (out / "a.mp4").stat().st_mtime_ns
    again = transcode_manifest(dataset, out, enc=Encoding(short_side=32, gop=4), log=None)
    assert (again.encoded, again.reused) == (0, 2)
    assert (out / "a.mp4").stat().st_mtime_ns == stamp
    with pytest.raises(mf.ManifestError, match="transcode.json: .* encoded with"):
        transcode_manifest(dataset, out, enc=Encoding(short_side=64, gop=4), log=None)
    assert (out / "a.mp4").stat().st_mtime_ns == stamp


def test_output_folder_that_would_overwrite_the_sources_is_refused(dataset, tmp_path):
    with pytest.raises(mf.ManifestError, match="would overwrite .*a.mp4"):
        transcode_manifest(dataset, dataset.parent, log=None)


def test_cli_exit_codes(dataset, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["transcode", str(dataset), "--out", str(out), "--short-side", "32",
                 "--workers", "1", "--no-validate"]) == 1  # the broken file
    text = capsys.readouterr()
    assert "2 videos re-encoded" in text.out and "broken.mp4" in text.out
    assert main(["transcode", str(dataset), "--out", str(out), "--gop", "0"]) == 2
    assert "gop" in capsys.readouterr().err
