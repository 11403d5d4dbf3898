"""Protocols as data: base/novel partition, k-shot draws, cross-dataset aggregation, the
synthetic dataset's frame sampling and evaluation views, and multi-view score averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidablate.config import ConfigError, ExperimentConfig
from vidablate.data.protocols import (
    base_novel_classes,
    build_protocol,
    kshot_indices,
    protocol_metrics,
)
from vidablate.data.synthetic import SyntheticSpec, SyntheticVideoIMU, generate_split
from vidablate.train.loop import score_views, train_batch

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"train_per_class": 3, "test_per_class": 2, "num_classes": 8, "base_classes": 4}


def _cfg(data=None, eval_=None, trainer=None) -> ExperimentConfig:
    raw = {"data": {**SMALL, **(data or {})}, "eval": eval_ or {}, "trainer": trainer or {}}
    return ExperimentConfig.from_dict(raw).validate()


def test_base_novel_partition_is_disjoint_and_ordered():
    base, novel = base_novel_classes(32, 24)
    assert base == list(range(24)) and novel == list(range(24, 32))
    data = build_protocol(_cfg())
    base_set, novel_set = data.evals
    assert (base_set.name, novel_set.name) == ("base", "novel")
    assert {int(x) for x in data.train.labels} == {0, 1, 2, 3}
    assert {int(x) for x in novel_set.dataset.labels} == {4, 5, 6, 7}
    assert novel_set.label_offset == 4 and len(novel_set.names) == 4
    with pytest.raises(ValueError, match="base=32"):
        base_novel_classes(32, 32)


def test_hm_and_cross_dataset_aggregation():
    bn = protocol_metrics("base_novel", {"base": (80.0, 99.0), "novel": (40.0, 90.0)})
    assert bn == {"base_acc": 80.0, "novel_acc": 40.0, "hm": pytest.approx(2 * 80 * 40 / 120)}
    cross = protocol_metrics("cross_dataset", {"split1": (40.0, 70.0), "split2": (44.0, 74.0),
                                               "split3": (42.0, 72.0)})
    assert cross["top1"] == pytest.approx(42.0) and cross["top5"] == pytest.approx(72.0)
    assert cross["top1_std"] == pytest.approx(2.0)  # sample std of 40, 44, 42
    assert cross["top1_split2"] == 44.0


def test_kshot_draw_is_deterministic_per_seed_and_balanced():
    labels = np.repeat(np.arange(5), 10)
    np.random.default_rng(1).shuffle(labels)
    a = kshot_indices(labels, [0, 1, 2, 3, 4], 4, seed=7)
    b = kshot_indices(labels, [0, 1, 2, 3, 4], 4, seed=7)
    c = kshot_indices(labels, [0, 1, 2, 3, 4], 4, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(labels[a]).tolist() == [4] * 5
    assert len(set(a.tolist())) == 20
    with pytest.raises(ConfigError, match="class 2 has only 10"):
        kshot_indices(labels, [2], 11, seed=0)


def test_synthetic_kshot_subset_follows_trainer_seed_and_is_recorded():
    d0 = build_protocol(_cfg({"k_shot": 2}, trainer={"seed": 0}))
    d1 = build_protocol(_cfg({"k_shot": 2}, trainer={"seed": 1}))
    assert len(d0.train) == 2 * 4 and len(d0.kshot) == 8
    assert [e["index"] for e in d0.kshot] != [e["index"] for e in d1.kshot]
    assert sorted(e["label"] for e in d0.kshot) == [0, 0, 1, 1, 2, 2, 3, 3]
    pinned = build_protocol(_cfg({"k_shot": 2, "k_shot_seed": 5, "seed": 0},
                                 trainer={"seed": 1}))
    again = build_protocol(_cfg({"k_shot": 2, "k_shot_seed": 5, "seed": 0},
                                trainer={"seed": 0}))
    assert pinned.kshot == again.kshot
    with pytest.raises(ConfigError, match="k_shot=4 exceeds"):
        _cfg({"k_shot": 4})


def test_identity_sampling_keeps_the_embedded_default_bit_exact():
    spec = SyntheticSpec(num_classes=4, train_per_class=1, test_per_class=1)
    plain = SyntheticVideoIMU(spec, "test")
    data = build_protocol(_cfg({"num_classes": 4, "base_classes": 2, "train_per_class": 1,
                                "test_per_class": 1}))
    assert data.evals[0].dataset.sampling is None  # the fast path
    item = data.evals[0].dataset[0]
    ref = plain[int(np.flatnonzero(np.isin(plain.labels, [0, 1]))[0])]
    assert torch.equal(item["video"], ref["video"]) and torch.equal(item["imu"], ref["imu"])


def test_source_frames_are_sampled_with_their_imu():
    cfg = _cfg({"source_frames": 16, "num_frames": 8}, eval_={"temporal_views": 2})
    data = build_protocol(cfg)
    test = data.evals[0].dataset
    item = test[0]
    assert item["video"].shape == (2, 8, 3, 32, 32) and item["imu"].shape == (2, 6, 8 * 16)
    raw = generate_split(test.spec, "test")
    row = int(test.indices[0])
    frames = torch.from_numpy(raw["video"][row]).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    # sparse eval, 2 views of 8 segments of 2 frames: view 0 -> frames 0,2,..; view 1 -> 1,3,..
    # IMU (data.imu_span=clip): the 16 rendered frames the segments cover, resampled to
    # 8 x 16 samples at the centres of 128 equal bins (sample k sits at (k + 0.5) / 16 frames)
    source = (np.arange(256) + 0.5) / 16
    times = (np.arange(128) + 0.5) * 16 / 128
    imu = torch.from_numpy(np.stack([np.interp(times, source, ch) for ch in raw["imu"][row]])
                           ).float()
    for view, offset in ((0, 0), (1, 1)):
        expect = (frames[offset::2] - mean) / std
        assert torch.allclose(item["video"][view], expect, atol=1e-5)
        torch.testing.assert_close(item["imu"][view], imu, rtol=0, atol=1e-6)
    train = data.train[0]
    assert train["video"].shape == (8, 3, 32, 32) and train["imu"].shape == (6, 128)


def test_dense_sampling_and_three_crops_shapes():
    cfg = _cfg({"source_frames": 16, "num_frames": 4, "sampling": "dense", "sampling_rate": 2},
               eval_={"temporal_views": 2, "spatial_crops": 3})
    item = build_protocol(cfg).evals[0].dataset[0]
    assert item["video"].shape == (6, 4, 3, 32, 32) and item["imu"].shape == (6, 6, 64)
    # a 32x32 frame has no long side: the three crops coincide
    assert torch.equal(item["video"][0], item["video"][1])
    assert not torch.equal(item["video"][0], item["video"][3])  # another temporal view


def test_multiview_scores_average_probabilities_or_logits():
    logits = torch.tensor([[4.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])  # 2 clips x 2 views
    prob = score_views(logits, 2, 2, "prob")
    assert torch.allclose(prob[0], (logits[0].softmax(0) + logits[1].softmax(0)) / 2)
    assert torch.allclose(score_views(logits, 2, 2, "logit")[1], torch.tensor([0.5, 1.5]))
    # probability averaging can disagree with logit averaging: a confident view dominates logits
    conf = torch.tensor([[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    assert score_views(conf, 1, 3, "prob").argmax() == 1
    assert score_views(conf, 1, 3, "logit").argmax() == 0


def test_corrupt_clips_leave_the_batch_and_an_empty_batch_gets_weight_zero():
    batch = {"video": torch.arange(4.0).view(4, 1), "label": torch.tensor([0, 1, 2, 3]),
             "valid": torch.tensor([True, False, True, False])}
    video, imu, target, weight = train_batch(batch, None)
    assert video.flatten().tolist() == [0.0, 2.0] and target.tolist() == [0, 2] and weight == 1
    batch["valid"] = torch.zeros(4, dtype=torch.bool)
    video, _, target, weight = train_batch(batch, None)
    assert video.shape[0] == 4 and weight == 0.0


def test_mixup_makes_soft_targets_over_the_training_classes():
    from vidablate.train.loop import mixer

    cfg = _cfg({"mixup": 0.8, "protocol": "closed_set"})
    mix = mixer(cfg, 8)
    batch = {"video": torch.randn(4, 8, 3, 32, 32), "label": torch.tensor([0, 1, 2, 3]),
             "valid": torch.ones(4, dtype=torch.bool)}
    video, _, target, _ = train_batch(batch, mix)
    assert target.shape == (4, 8) and torch.allclose(target.sum(1), torch.ones(4))
    assert video.shape == (4, 8, 3, 32, 32) and type(video) is torch.Tensor
    with pytest.raises(ConfigError, match="IMU"):
        ExperimentConfig.from_dict({"data": {"cutmix": 1.0}, "model": {"sirm": True}}).validate()


def test_bad_data_knobs_are_named():
    for data, msg in (({"sampling": "random"}, "data.sampling"),
                      ({"decoder": "ffmpeg"}, "data.decoder"),
                      ({"dataset": "hmdb51"}, "data.train_manifest"),
                      ({"train_manifest": "x.parquet"}, "data.dataset='synthetic'"),
                      ({"protocol": "cross_dataset"}, "data.cross_manifests"),
                      ({"image_size": 64}, "data.image_size=64")):
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
            _cfg(data)
    with pytest.raises(ConfigError, match="eval.spatial_crops"):
        _cfg(eval_={"spatial_crops": 2})
