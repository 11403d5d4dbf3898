"""Manifest clip datasets on real mp4 files (the synthetic set exported with PyAV): sampling,
views, IMU cut to the sampled frames, time spans, corrupt files, and the protocols built on
manifests (k-shot from a saved list, cross-dataset splits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidablate.config import ConfigError, ExperimentConfig
from vidablate.data.clips import ClipSampling, ManifestClips
from vidablate.data.converters import export_synthetic
from vidablate.data.manifest import manifest_records, read_manifest
from vidablate.data.protocols import build_protocol
from vidablate.data.synthetic import SyntheticSpec, generate_split
from vidablate.data.video import VideoDecodeError

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = SyntheticSpec(num_classes=4, train_per_class=2, test_per_class=1, num_frames=16,
                     image_size=32, imu_rate=4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("mp4")
    return export_synthetic(out, SPEC)


def _clips(files, sampling, **kw):
    records = manifest_records(read_manifest(files["test"]))
    return ManifestClips(records, files["test"].parent, sampling, imu_rate=SPEC.imu_rate, **kw)


@pytest.mark.parametrize("imu_span", ["frames", "clip"])
def test_sparse_eval_views_decode_the_right_frames_and_imu(exported, imu_span):
    s = ClipSampling(num_frames=4, image_size=32, mode="sparse", temporal_views=2,
                     imu_span=imu_span)
    ds = _clips(exported, s, use_imu=True, fps=8.0)
    item = ds[0]
    assert item["valid"] and item["video"].shape == (2, 4, 3, 32, 32)
    raw = generate_split(SPEC, "test")
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    # 16 frames in 4 segments of 4; 2 views -> offsets 1 and 3 inside each segment. H.264
    # blurs the per-frame noise, so the decoded view must match its own frames best.
    for view, offset in ((0, 1), (1, 3)):
        decoded = item["video"][view] * std + mean
        errors = []
        for candidate in range(4):
            idx = np.arange(4) * 4 + candidate
            frames = torch.from_numpy(raw["video"][0][idx]).permute(0, 3, 1, 2).float() / 255
            errors.append(float((decoded - frames).abs().mean()))
        assert int(np.argmin(errors)) == offset and errors[offset] < 0.03, errors
        idx = np.arange(4) * 4 + offset
        if imu_span == "frames":  # the 4 sampled frames' own samples
            imu = raw["imu"][0].reshape(6, 16, 4)[:, idx].reshape(6, -1)
        else:  # the whole 16-frame span the segments cover, resampled to 4 x 4 samples
            source = (np.arange(64) + 0.5) / 4  # sample k at (k + 0.5) / imu_rate frames
            times = (np.arange(16) + 0.5) * 16 / 16
            imu = np.stack([np.interp(times, source, ch) for ch in raw["imu"][0]])
        assert np.allclose(item["imu"][view].numpy(), imu, atol=1e-5)


def test_dense_train_clip_and_three_crops(exported):
    train = _clips(exported, ClipSampling(num_frames=4, image_size=32, mode="dense", rate=2,
                                          train=True))
    item = train[1]
    assert item["video"].shape == (4, 3, 32, 32) and "imu" not in item
    crops = _clips(exported, ClipSampling(num_frames=4, image_size=32, spatial_crops=3))
    assert crops[0]["video"].shape == (3, 4, 3, 32, 32)


def test_start_end_restrict_the_sampled_frames(exported):
    records = manifest_records(read_manifest(exported["test"]))
    rec = {**records[0], "start": 1.0, "end": 1.5}  # frames 8..11 at 8 fps
    s = ClipSampling(num_frames=4, image_size=32)
    ds = ManifestClips([rec], exported["test"].parent, s, use_imu=True, imu_rate=4, fps=8.0)
    full = ManifestClips([{**rec, "start": None, "end": None}], exported["test"].parent,
                         ClipSampling(num_frames=16, image_size=32))
    assert torch.allclose(ds[0]["video"], full[0]["video"][8:12], atol=1e-6)
    raw = generate_split(SPEC, "test")
    assert np.allclose(ds[0]["imu"].numpy(), raw["imu"][0][:, 32:48], atol=1e-5)


def test_corrupt_video_is_skipped_or_fatal(exported, tmp_path):
    good = exported["test"].parent / manifest_records(read_manifest(exported["test"]))[0]["video"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes()[:500])
    rec = {"video": str(bad), "label": 2, "label_name": "x"}
    s = ClipSampling(num_frames=4, image_size=32, temporal_views=2)
    item = ManifestClips([rec], tmp_path, s)[0]
    assert not item["valid"] and item["video"].shape == (2, 4, 3, 32, 32)
    assert item["label"] == 2 and not item["video"].any()
    with pytest.raises(VideoDecodeError, match="bad.mp4.*on_corrupt=fail"):
        ManifestClips([rec], tmp_path, s, on_corrupt="fail")[0]


def _manifest_cfg(files, **data):
    raw = {"data": {"dataset": "exported", "num_classes": 4, "train_manifest": str(files["train"]),
                    "test_manifest": str(files["test"]),
                    "class_names_file": str(files["classnames"]), "num_frames": 4, **data}}
    return ExperimentConfig.from_dict(raw).validate()


def test_manifest_kshot_is_seeded_and_a_saved_list_is_reused(exported, tmp_path):
    a = build_protocol(_manifest_cfg(exported, protocol="closed_set", k_shot=1, k_shot_seed=3))
    b = build_protocol(_manifest_cfg(exported, protocol="closed_set", k_shot=1, k_shot_seed=3))
    assert a.kshot == b.kshot and len(a.train) == 4
    assert sorted(e["label"] for e in a.kshot) == [0, 1, 2, 3]
    saved = tmp_path / "kshot_split.json"
    saved.write_text(json.dumps(a.kshot))
    c = build_protocol(_manifest_cfg(exported, protocol="closed_set", k_shot_file=str(saved)))
    assert [r["video"] for r in c.train.records] == [e["video"] for e in a.kshot]
    saved.write_text(json.dumps([{"video": "elsewhere.mp4"}]))
    with pytest.raises(ConfigError, match="not in data.train_manifest"):
        build_protocol(_manifest_cfg(exported, protocol="closed_set", k_shot_file=str(saved)))


def test_base_novel_and_cross_dataset_on_manifests(exported):
    bn = build_protocol(_manifest_cfg(exported, base_classes=2))
    assert [s.name for s in bn.evals] == ["base", "novel"] and bn.evals[1].label_offset == 2
    assert {int(x) for x in bn.evals[1].dataset.labels} == {2, 3}
    assert set(bn.train.labels.tolist()) == {0, 1}
    cross = build_protocol(_manifest_cfg(
        exported, protocol="cross_dataset", cross_manifests=[str(exported["test"])] * 2,
        cross_class_names_file=str(exported["classnames"])))
    assert [s.name for s in cross.evals] == ["split1", "split2"]
    assert cross.evals[0].names == cross.train_names and len(cross.evals[1].dataset) == 4
    with pytest.raises(ConfigError, match="data.num_classes=5"):
        build_protocol(_manifest_cfg(exported, num_classes=5, base_classes=2))
