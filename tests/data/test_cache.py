"""Frozen-prefix feature cache: exact features, keys that change with what the features depend
on, partial/stale entries rebuilt, fixed draws of random training input, and a trial that
gives the same metrics with and without the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidablate.config import ExperimentConfig
from vidablate.data import cache
from vidablate.data.protocols import build_protocol
from vidablate.model import build_model
from vidablate.train.loop import seed_everything

from ..fakes import FakeTrain

SMALL = {"train_per_class": 2, "test_per_class": 1}
FROZEN = {"trainable_blocks": 0, "train_visual_proj": False, "distill": False, "mmb": True}


def _trial(model=None, data=None, trainer=None, eval_=None):
    cfg = ExperimentConfig.from_dict({
        "model": {**FROZEN, **(model or {})}, "data": {**SMALL, **(data or {})},
        "trainer": {"epochs": 2, "batch_size": 4, "num_workers": 0, **(trainer or {})},
        "eval": eval_ or {}}).validate()
    seed_everything(cfg.trainer.seed)
    data_ = build_protocol(cfg)
    return cfg, build_model(cfg.model, cfg.data.num_frames), data_


def _plan(tmp_path, **kw):
    cfg, model, data = _trial(**kw)
    return cfg, model, data, cache.plan(cfg, model, data, str(tmp_path / "cache"))


@pytest.mark.parametrize("model", [{}, {"trainable_blocks": 1, "mmb": False}],
                         ids=["whole-tower-cls", "prefix-all-tokens"])
def test_cached_features_are_bit_identical_to_the_uncached_path(tmp_path, model):
    cfg, net, data, p = _plan(tmp_path, model=model)
    assert p.use, p.reason
    cache.build_local(p, data, net.frame_encoder, torch.device("cpu"), False, batch_size=4,
                      log=lambda *_: None)
    fe = net.frame_encoder
    for name, entry in p.entries.items():
        ds = cache.dataset_of(data, name)
        cached = cache.CachedClips(entry)
        assert len(cached) == len(ds)
        video = torch.stack([ds[i]["video"] for i in range(4)])
        want = cache.compute_tokens(fe, video, entry.payload["select"])
        got = torch.stack([cached[i]["tokens"] for i in range(4)])
        assert torch.equal(got, want), name  # same input, same batch: same bits
        assert [int(cached[i]["label"]) for i in range(4)] == [int(ds[i]["label"])
                                                                for i in range(4)]
        assert torch.equal(cached[0]["imu"], ds[0]["imu"])
    expected_tokens = 1 if not model else 1 + 16  # CLS only / CLS + 4x4 patches
    assert p.entries["train"].tokens == expected_tokens
    net.eval()
    names = data.train_names
    video = torch.stack([data.train[i]["video"] for i in range(4)])
    imu = torch.stack([data.train[i]["imu"] for i in range(4)])
    tokens = torch.stack([cache.CachedClips(p.entries["train"])[i]["tokens"] for i in range(4)])
    with torch.no_grad():
        assert torch.equal(net(video, imu, names)[0], net(None, imu, names, tokens)[0])


def test_keys_change_with_weights_frames_and_resolution_not_with_the_trainable_tail(tmp_path):
    _, net, data, base = _plan(tmp_path, model={"trainable_blocks": 1, "mmb": False})
    key = base.entries["train"].key
    _, _, _, frames = _plan(tmp_path, model={"trainable_blocks": 1, "mmb": False},
                            data={"num_frames": 4})
    assert frames.entries["train"].key != key
    with torch.no_grad():
        net.frame_encoder.visual.transformer.resblocks[3].mlp.c_fc.weight.add_(1.0)  # tail
    cfg0, _, _ = _trial(model={"trainable_blocks": 1, "mmb": False})
    same = cache.plan(cfg0, net, data, str(tmp_path / "cache"))
    assert same.entries["train"].key == key  # the trained tail is not in the cache
    with torch.no_grad():
        net.frame_encoder.visual.transformer.resblocks[0].ln_1.weight.add_(1e-3)  # prefix
    changed = cache.plan(cfg0, net, data, str(tmp_path / "cache"))
    assert changed.entries["train"].key != key
    # resolution: the same prefix weights on 48 px frames (the key hashes the rendered input)
    cfg48 = ExperimentConfig.from_dict({"model": {**FROZEN, "trainable_blocks": 1},
                                        "data": {**SMALL, "image_size": 48},
                                        "trainer": {"epochs": 1}})
    seed_everything(0)
    resized = cache.plan(cfg48, net, build_protocol(cfg48), str(tmp_path / "cache"))
    assert resized.entries["train"].key not in (key, changed.entries["train"].key)
    assert resized.entries["train"].payload["resolution"] == 48


def test_partial_and_stale_entries_are_detected_and_rebuilt(tmp_path):
    cfg, net, data, p = _plan(tmp_path, data={"cache_part_rows": 8})
    entry = p.entries["train"]
    assert entry.parts == 4 and cache.state(entry) == ("missing", [0, 1, 2, 3])
    cache.build_local(p, data, net.frame_encoder, torch.device("cpu"), False,
                      log=lambda *_: None)
    assert cache.state(entry) == ("complete", [])
    kept = entry.path(0, ".npy").stat().st_mtime_ns
    entry.path(2, ".done").unlink()  # a build that died before finishing part 2
    assert cache.state(entry) == ("partial", [2])
    with pytest.raises(cache.CacheError, match="partial"):
        cache.CachedClips(entry)
    assert cache.build_local(p, data, net.frame_encoder, torch.device("cpu"), False,
                             log=lambda *_: None) == 1
    assert entry.path(0, ".npy").stat().st_mtime_ns == kept
    np.save(entry.path(1, ".npy"), np.zeros((3, 1), dtype=np.float32))  # damaged part
    assert cache.state(entry) == ("partial", [1])
    meta = json.loads((tmp_path / "cache" / entry.key / "meta.json").read_text())
    meta["payload"]["weights"] = "something else"  # written by another version
    (tmp_path / "cache" / entry.key / "meta.json").write_text(json.dumps(meta))
    assert cache.state(entry)[0] == "stale"
    assert cache.build_local(p, data, net.frame_encoder, torch.device("cpu"), False,
                             log=lambda *_: None) == 4
    assert cache.state(entry) == ("complete", [])


def test_random_training_input_is_cached_as_fixed_draws(tmp_path):
    random_input = {"source_frames": 16, "num_frames": 8}
    cfg, net, data, p = _plan(tmp_path, data={**random_input, "cache_train_views": 2})
    entry = p.entries["train"]
    assert p.use and entry.views == 2 and "2 fixed training draws" in p.reason
    cache.build_local(p, data, net.frame_encoder, torch.device("cpu"), False,
                      log=lambda *_: None)
    clips = cache.CachedClips(entry)
    first = clips[0]["tokens"]
    clips.set_epoch(1)
    assert not torch.equal(clips[0]["tokens"], first)  # another draw of the frames
    clips.set_epoch(2)
    assert torch.equal(clips[0]["tokens"], first)  # epoch 2 reads draw 0 again
    again = tmp_path / "again"
    p2 = cache.plan(cfg, net, data, str(again))
    cache.build_local(p2, data, net.frame_encoder, torch.device("cpu"), False,
                      log=lambda *_: None)
    assert torch.equal(cache.CachedClips(p2.entries["train"])[0]["tokens"], first)
    off = _plan(tmp_path, data={**random_input, "cache_train_views": 0})[3]
    assert not off.use and "cache_train_views=0" in off.reason


@pytest.mark.parametrize(("kw", "reason"), [
    ({"model": {"trainable_blocks": 4, "mmb": False}}, "full fine-tuning"),
    ({"model": {"spg": True, "mmb": False}}, "block 1 carries PreChain"),
    ({"model": {"cct": True, "mmb": False}}, "block 1 carries CrossFrameMessage"),
    ({"data": {"mixup": 0.8}, "model": {"sirm": False}}, "mixup"),
])
def test_trials_that_cannot_use_the_cache_say_why(tmp_path, kw, reason):
    p = _plan(tmp_path, **kw)[3]
    assert not p.use and reason in p.reason


def test_cache_off_and_roots_other_than_paths_and_s3_are_refused_with_a_reason(tmp_path):
    cfg, net, data = _trial()
    assert cache.plan(cfg, net, data, str(tmp_path), "off").reason == "cache=off"
    gcs = cache.plan(cfg, net, data, "gs://bucket/cache")
    assert not gcs.use and "filesystem path" in gcs.reason and "s3://" in gcs.reason
    s3 = cache.plan(cfg, net, data, "s3://bucket/cache/")  # tests/data/test_cache_s3.py
    assert s3.use and s3.entries["train"].root == f"s3://bucket/cache/{s3.entries['train'].key}"
    with pytest.raises(cache.CacheError, match="cache='sometimes'"):
        cache.plan(cfg, net, data, str(tmp_path), "sometimes")


@pytest.mark.parametrize("model", [{}, {"trainable_blocks": 2, "mmb": False, "sirm": True,
                                        "sgam": True, "distill": True}],
                         ids=["frozen-mmb", "isclip-tail"])
def test_a_trial_gives_the_same_metrics_with_and_without_the_cache(tmp_path, monkeypatch,
                                                                   model):
    from vidablate.train import loop

    exp = {"model": {**FROZEN, **model}, "data": SMALL,
           "trainer": {"epochs": 2, "batch_size": 4, "num_workers": 0, "lr_new": 1e-2,
                       "lr_visual": 1e-3}}
    runs = {}
    for mode in ("off", "auto"):
        fake = FakeTrain(tmp_path / mode)
        (tmp_path / mode).mkdir()
        with monkeypatch.context() as m:
            fake.install(m)
            loop.train_loop_per_worker({"experiment": exp, "mlflow_run_id": None,
                                        "cache": {"mode": mode, "root": str(tmp_path / "c")}})
        runs[mode] = fake.reports
    assert runs["off"][0]["feature_cache"] == 0.0 and runs["auto"][0]["feature_cache"] == 1.0
    for off, on in zip(runs["off"], runs["auto"], strict=True):
        for key in ("train_loss", "base_acc", "novel_acc", "hm"):
            assert on[key] == pytest.approx(off[key], rel=1e-5, abs=1e-5), key
