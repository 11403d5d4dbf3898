"""Behaviour tests for the embedded synthetic video + IMU dataset."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

# isort: split
from vidablate.data.synthetic import (
    CLIP_MEAN,
    CLIP_STD,
    SyntheticSpec,
    SyntheticVideoIMU,
    class_names,
    generate_split,
    split_labels,
)

OBJECT_WORDS = ["red square", "green circle", "blue triangle", "yellow cross"]
MOTION_WORDS = [
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "growing",
    "shrinking",
    "turning clockwise",
    "turning counterclockwise",
]
PAIRS = [(MOTION_WORDS[i], MOTION_WORDS[i + 1]) for i in range(0, 8, 2)]
SMALL = SyntheticSpec(
    num_classes=4, train_per_class=3, test_per_class=2, num_frames=6, image_size=20, imu_rate=4
)


def _red_track(video: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centroid x, y and pixel area of the red object: video [N, T, H, W, 3]."""
    v = video.astype(np.int16)
    mask = (v[..., 0] > 150) & (v[..., 1] < 110) & (v[..., 2] < 110)
    area = mask.sum(axis=(2, 3)).astype(np.float64)
    assert area.min() > 0, "red object vanished from some frame"
    ys, xs = np.arange(video.shape[2]), np.arange(video.shape[3])
    cx = (mask * xs[None, None, None, :]).sum(axis=(2, 3)) / area
    cy = (mask * ys[None, None, :, None]).sum(axis=(2, 3)) / area
    return cx, cy, area


def _active_mask(window: np.ndarray, num_frames: int, rate: int) -> np.ndarray:
    """Boolean [N, T*rate] marking IMU samples of the active frames."""
    frame = np.arange(num_frames * rate) // rate
    return (frame[None] >= window[:, :1]) & (frame[None] <= window[:, 1:])


def _z(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample z statistic of the difference in means."""
    return abs(a.mean() - b.mean()) / math.sqrt(a.var() / len(a) + b.var() / len(b) + 1e-12)


@pytest.fixture(scope="module")
def red_clips() -> dict:
    """Many clips of every class at modest resolution; used for the red-square statistics."""
    spec = SyntheticSpec(train_per_class=80, image_size=24, num_frames=8, imu_rate=8)
    data = generate_split(spec, "train")
    names = class_names()
    by_name = {}
    for motion in MOTION_WORDS:
        sel = data["label"] == names.index(f"red square {motion}")
        by_name[motion] = {k: v[sel] for k, v in data.items()}
    return {"spec": spec, "by_name": by_name}


@pytest.fixture(scope="module")
def default_train() -> dict:
    return generate_split(SyntheticSpec(train_per_class=8), "train")


def test_generate_split_shapes_dtypes_and_windows() -> None:
    for split, per_class in (("train", 3), ("test", 2)):
        data = generate_split(SMALL, split)
        n = 4 * per_class
        assert data["video"].shape == (n, 6, 20, 20, 3) and data["video"].dtype == np.uint8
        assert data["imu"].shape == (n, 6, 24) and data["imu"].dtype == np.float32
        assert data["label"].shape == (n,) and data["label"].dtype == np.int64
        assert data["window"].shape == (n, 2) and data["window"].dtype == np.int64
        assert np.bincount(data["label"], minlength=4).tolist() == [per_class] * 4
        start, end = data["window"].T
        assert (start >= 0).all() and (end <= 5).all()
        assert (end - start + 1 >= math.ceil(0.4 * 6)).all()


def test_dataset_item_is_clip_normalised() -> None:
    ds = SyntheticVideoIMU(SMALL, "train")
    raw = generate_split(SMALL, "train")
    assert len(ds) == 12 and ds.class_names == class_names(4)
    item = ds[5]
    assert set(item) == {"video", "imu", "label", "index", "valid"} and item["valid"]
    assert item["video"].shape == (6, 3, 20, 20) and item["video"].dtype == torch.float32
    assert item["imu"].shape == (6, 24) and item["imu"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert item["index"] == 5 and isinstance(item["index"], int)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    undone = (item["video"] * std + mean) * 255.0
    expected = torch.from_numpy(raw["video"][5]).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(undone, expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(item["imu"], torch.from_numpy(raw["imu"][5]))
    assert int(item["label"]) == raw["label"][5]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["video"].shape == (4, 6, 3, 20, 20) and batch["label"].shape == (4,)


def test_determinism_and_seed_dependence() -> None:
    a, b = generate_split(SMALL, "train"), generate_split(SMALL, "train")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other_seed = generate_split(SyntheticSpec(**{**SMALL.__dict__, "seed": 1}), "train")
    assert not np.array_equal(a["video"], other_seed["video"])
    assert not np.array_equal(a["imu"], other_seed["imu"])
    test = generate_split(SyntheticSpec(**{**SMALL.__dict__, "test_per_class": 3}), "test")
    assert not np.array_equal(a["video"], test["video"])
    assert not np.array_equal(a["imu"], test["imu"])


def test_class_order_covers_words_and_keeps_pairs_together() -> None:
    names = class_names()
    assert len(names) == 32 and len(set(names)) == 32
    assert sorted(names) == sorted(f"{o} {m}" for o in OBJECT_WORDS for m in MOTION_WORDS)
    for k in (16, 24):
        base = names[:k]
        assert all(any(n.startswith(o) for n in base) for o in OBJECT_WORDS)
        assert all(any(n.endswith(m) for n in base) for m in MOTION_WORDS)
        for obj in OBJECT_WORDS:
            for m1, m2 in PAIRS:
                assert (f"{obj} {m1}" in base) == (f"{obj} {m2}" in base)
    assert class_names(5) == names[:5]
    for bad in (1, 33):
        with pytest.raises(ValueError, match="num_classes"):
            class_names(bad)


def test_translation_is_monotonic_inside_window_and_still_outside(red_clips: dict) -> None:
    size = red_clips["spec"].image_size
    for motion, direction in (("moving right", 1), ("moving left", -1)):
        clips = red_clips["by_name"][motion]
        cx, cy, _ = _red_track(clips["video"])
        step = np.diff(cx, axis=1) * direction
        frame = np.arange(1, cx.shape[1])
        # Motion spans [first - 0.5, last + 0.5], so steps into frames first..last+1 move.
        start, end = clips["window"][:, :1], clips["window"][:, 1:]
        moving = (frame[None] >= start) & (frame[None] <= end + 1)
        assert (step[moving] > -0.5).all()
        assert (np.abs(step[~moving]) < 0.5).all()
        assert (np.abs(np.diff(cy, axis=1)) < 0.5).all()
        assert ((cx[:, -1] - cx[:, 0]) * direction > 0.25 * size).all()


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p[0].split()[-1])
def test_reversal_pair_indistinguishable_without_time_order(red_clips: dict, pair) -> None:
    a, b = (red_clips["by_name"][m] for m in pair)
    feats = {}
    for name, clips in zip(pair, (a, b), strict=True):
        cx, cy, area = _red_track(clips["video"])
        mean_frame = clips["video"].astype(np.float64).mean(axis=1)
        rx, ry = cx - cx.mean(1, keepdims=True), cy - cy.mean(1, keepdims=True)
        feats[name] = {
            "orderless": [cx.mean(1), cy.mean(1), cx.std(1), cy.std(1), area.mean(1),
                          area.std(1), mean_frame.mean(axis=(1, 2, 3)), mean_frame.std(axis=(1, 2, 3))],
            "ordered": [cx[:, -1] - cx[:, 0], cy[:, -1] - cy[:, 0], area[:, -1] - area[:, 0],
                        (rx[:, :-1] * ry[:, 1:] - ry[:, :-1] * rx[:, 1:]).sum(1)],
        }  # fmt: skip
    za = [_z(x, y) for x, y in zip(*(feats[m]["orderless"] for m in pair), strict=True)]
    zb = [_z(x, y) for x, y in zip(*(feats[m]["ordered"] for m in pair), strict=True)]
    assert max(za) < 4.5, za
    assert max(zb) > 10.0, zb


def test_orderless_statistics_separate_non_pairs(red_clips: dict) -> None:
    left, up = (red_clips["by_name"][m] for m in ("moving left", "moving up"))
    (lx, ly, _), (ux, uy, _) = _red_track(left["video"]), _red_track(up["video"])
    assert _z(lx.std(1), ux.std(1)) > 10 and _z(ly.std(1), uy.std(1)) > 10


def test_imu_matches_object_motion(red_clips: dict) -> None:
    spec, by_name = red_clips["spec"], red_clips["by_name"]
    rate = spec.imu_rate

    def halves(clips: dict, channel: int) -> tuple[np.ndarray, np.ndarray]:
        first, second = [], []
        for imu, (s, e) in zip(clips["imu"][:, channel], clips["window"], strict=True):
            seg = imu[s * rate : (e + 1) * rate]
            first.append(seg[: len(seg) // 2].mean())
            second.append(seg[len(seg) // 2 :].mean())
        return np.array(first), np.array(second)

    acc_first, acc_second = halves(by_name["moving right"], 0)
    assert (acc_first > 0).mean() > 0.9 and (acc_second < 0).mean() > 0.9
    acc_first, acc_second = halves(by_name["moving up"], 1)
    assert (acc_first < acc_second).mean() > 0.95  # up = -y; gravity offsets both halves
    cw, ccw = (sum(halves(by_name[m], 5)) for m in PAIRS[3])
    assert (cw < 0).mean() > 0.95 and (ccw > 0).mean() > 0.95
    grow, shrink = (halves(by_name[m], 2)[0] for m in PAIRS[2])
    assert grow.mean() < 0 < shrink.mean()
    # Gyro y integrates to the horizontal displacement seen in the video.
    clips = {k: np.concatenate([by_name[m][k] for m in PAIRS[0]]) for k in ("video", "imu")}
    cx, _, _ = _red_track(clips["video"])
    corr = np.corrcoef(clips["imu"][:, 4].sum(1), cx[:, -1] - cx[:, 0])[0, 1]
    assert corr > 0.95


def test_imu_energy_marks_active_window(default_train: dict) -> None:
    imu, window = default_train["imu"].astype(np.float64), default_train["window"]
    active = _active_mask(window, 8, 16)
    keep = (~active).any(1)
    assert keep.sum() > 100
    inside, outside = [], []
    for x, m in zip(imu[keep], active[keep], strict=True):
        x = x - x[:, ~m].mean(1, keepdims=True)  # remove gravity and its per-clip gain
        inside.append((x[:, m] ** 2).mean())
        outside.append((x[:, ~m] ** 2).mean())
    inside, outside = np.array(inside), np.array(outside)
    assert (inside > outside).all()
    assert inside.mean() > 20 * outside.mean()
    # Outside the window only sensor noise remains, although the distractor moves all clip.
    assert outside.mean() < 1.3 * 0.05**2


def test_distractors_move_but_do_not_reach_the_imu() -> None:
    spec = SyntheticSpec(num_classes=8, train_per_class=6, num_distractors=3, noise=0.0)
    data = generate_split(spec, "train")
    active = _active_mask(data["window"], 8, 16)
    for x, m in zip(data["imu"], active, strict=True):
        if (~m).any():
            np.testing.assert_allclose(x[:, ~m], x[:, ~m][:, :1].repeat((~m).sum(), 1), atol=1e-6)
    v = data["video"].astype(np.int16)
    grey = (v.min(-1) > 140) & (v.max(-1) - v.min(-1) < 40)
    changed = (grey[:, 0] != grey[:, -1]).sum(axis=(1, 2))
    assert (changed > 0).mean() > 0.9


def test_classes_filter_keeps_global_labels() -> None:
    spec = SyntheticSpec(num_classes=6, train_per_class=4, test_per_class=2)
    ds = SyntheticVideoIMU(spec, "test", classes=[1, 4])
    assert len(ds) == 4 and set(ds.labels.tolist()) == {1, 4}
    assert {int(ds[i]["label"]) for i in range(len(ds))} == {1, 4}
    assert len(ds.class_names) == 6
    with pytest.raises(ValueError, match="classes"):
        SyntheticVideoIMU(spec, "test", classes=[6])


def test_labels_come_first_and_frames_are_rendered_on_first_use() -> None:
    """A plan or a dry run reads labels and sizes only; the frames, IMU and windows a trial
    reads are those of the full generation, rendered once."""
    spec = SyntheticSpec(num_classes=6, train_per_class=3, test_per_class=2, seed=4)
    full = generate_split(spec, "train")
    np.testing.assert_array_equal(split_labels(spec, "train"), full["label"])
    ds = SyntheticVideoIMU(spec, "train", classes=[0, 5])
    keep = np.flatnonzero(np.isin(full["label"], [0, 5]))
    assert len(ds) == len(keep) == 6 and ds._rendered is None
    np.testing.assert_array_equal(ds.labels, full["label"][keep])
    np.testing.assert_array_equal(ds.video, full["video"][keep])
    rendered = ds._rendered
    np.testing.assert_array_equal(ds.imu.numpy(), full["imu"][keep])
    np.testing.assert_array_equal(ds.windows, full["window"][keep])
    assert ds._rendered is rendered  # once


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_classes", 1),
        ("num_classes", 33),
        ("train_per_class", 0),
        ("test_per_class", -1),
        ("num_frames", 1),
        ("image_size", 15),
        ("imu_rate", 0),
        ("num_distractors", -1),
        ("noise", -0.1),
        ("noise", float("nan")),
        ("seed", -1),
        ("num_frames", 8.0),
        ("distractor_style", "cloud"),
        ("object_scale_range", 0.5),
    ],
)
def test_bad_spec_values_raise(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SyntheticSpec(**{field: value})


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match="val"):
        generate_split(SMALL, "val")
    with pytest.raises(ValueError, match="val"):
        SyntheticVideoIMU(SMALL, "val")


def test_default_train_split_is_fast() -> None:
    start = time.perf_counter()
    data = generate_split(SyntheticSpec(), "train")
    elapsed = time.perf_counter() - start
    assert data["video"].shape == (32 * 24, 8, 32, 32, 3)
    assert elapsed < 5.0, f"default train split took {elapsed:.2f}s"


# ----------------------------------------------------------------- mechanism variants

VARIANT = SyntheticSpec(num_classes=32, train_per_class=2, test_per_class=1, seed=4,
                        num_distractors=0)


def _colour_pixels(video: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Pixels per frame within 40 of an object colour: video [N, T, H, W, 3] -> [N, T]."""
    near = np.linalg.norm(video.astype(np.float32) - colour, axis=-1) < 40
    return near.sum(axis=(-1, -2))


def test_variants_off_leave_the_generator_unchanged() -> None:
    plain = generate_split(VARIANT, "train")
    off = generate_split(SyntheticSpec(**{**VARIANT.__dict__, "outside_object": False,
                                          "distractor_style": "blob",
                                          "object_scale_range": 1.0}), "train")
    for key in plain:
        np.testing.assert_array_equal(plain[key], off[key])


def test_outside_object_swaps_the_object_outside_the_window_only() -> None:
    from vidablate.data.synthetic import _CLASS_TABLE, OBJECT_COLOURS

    spec = SyntheticSpec(**{**VARIANT.__dict__, "outside_object": True})
    data, plain = generate_split(spec, "train"), generate_split(VARIANT, "train")
    np.testing.assert_array_equal(data["window"], plain["window"])  # same clips
    obj = np.array([_CLASS_TABLE[c][0] for c in data["label"]])
    own = _colour_pixels(data["video"], OBJECT_COLOURS[obj][:, None, None, None, :])
    t = np.arange(spec.num_frames)[None]
    inside = (t >= data["window"][:, :1]) & (t <= data["window"][:, 1:])
    assert (own[inside] > 0).mean() > 0.99  # the labelled object is drawn in its window
    assert (own[~inside] == 0).mean() > 0.99  # and nowhere else
    assert (~inside).any()
    colourful = np.stack([_colour_pixels(data["video"], c) for c in OBJECT_COLOURS], -1)
    assert ((colourful > 0).sum(-1)[~inside] == 1).mean() > 0.99  # exactly one other object


def test_object_distractors_are_other_larger_objects_the_imu_ignores() -> None:
    from vidablate.data.synthetic import _CLASS_TABLE, OBJECT_COLOURS

    base = {**VARIANT.__dict__, "num_distractors": 2, "noise": 0.0}
    data = generate_split(SyntheticSpec(**{**base, "distractor_style": "object"}), "train")
    plain = generate_split(SyntheticSpec(**base), "train")
    # the IMU follows the labelled object only (the gain is drawn after the extra draws)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = data["imu"][:, :, 1:] / plain["imu"][:, :, 1:]
    finite = np.isfinite(ratio) & (np.abs(plain["imu"][:, :, 1:]) > 1e-3)
    per_clip = np.where(finite, ratio, np.nan)
    assert np.nanmax(np.nanstd(per_clip.reshape(len(ratio), -1), axis=1)) < 1e-4
    obj = np.array([_CLASS_TABLE[c][0] for c in data["label"]])
    colourful = np.stack([_colour_pixels(data["video"][:, :1], c)[:, 0]
                          for c in OBJECT_COLOURS], -1)  # first frame [N, 4]
    others = colourful.copy()
    others[np.arange(len(obj)), obj] = 0
    assert (others.sum(-1) > 0).all()  # every clip shows another object
    assert np.median(others.sum(-1)) > np.median(colourful[np.arange(len(obj)), obj])


def test_object_scale_range_spreads_the_sizes() -> None:
    plain = generate_split(SyntheticSpec(**VARIANT.__dict__), "train")
    spread = generate_split(SyntheticSpec(**{**VARIANT.__dict__, "object_scale_range": 2.0}),
                            "train")
    from vidablate.data.synthetic import _generate

    s0 = _generate(SyntheticSpec(**VARIANT.__dict__), "train")["scale"][:, 0]
    s1 = _generate(SyntheticSpec(**{**VARIANT.__dict__, "object_scale_range": 2.0}),
                   "train")["scale"][:, 0]
    ratio = s1 / s0
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 2.0 + 1e-6
    assert np.log(ratio).std() > 0.3  # log-uniform on [-log 2, log 2]: std 0.40
    assert plain["video"].shape == spread["video"].shape
