"""Behaviour tests for the tiny-CLIP pretraining of the embedded default (DESIGN §4): the loss
measurably falls, saved weights round-trip through load_clip, the cache is built once (and
once only under concurrency), and ``pretrained="synthetic"`` is refused for other backbones."""

from __future__ import annotations

import threading
import time

import numpy as np
import open_clip
import pytest
import torch

# isort: split
from vidablate import pretrain
from vidablate.backbone import BackboneError, load_clip
from vidablate.data.synthetic import (
    OBJECT_COLOURS,
    SyntheticSpec,
    generate_split,
    generate_split_with_tracks,
)

NAME = "vidablate-tiny"
FAST = {"batch_size": 16, "clips_per_class": 4, "eval_clips_per_class": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def _fixed_batch():
    """8 clips of a held-out data seed with their captions (never a training seed)."""
    data = generate_split_with_tracks(SyntheticSpec(seed=12_345_678, test_per_class=1), "test")
    idx = np.arange(32)
    video = pretrain._to_tensor(data["video"][idx])
    labels = torch.from_numpy(data["label"][idx])
    objects = pretrain._object_of_class()[data["label"][idx]]
    ids = torch.from_numpy(pretrain.appearance_ids(objects, data["centre"][idx],
                                                   data["scale"][idx]))
    return video, labels, ids


@torch.no_grad()
def _loss(model, tokenizer) -> float:
    model.eval()
    return pretrain.pair_losses(model, pretrain.caption_tokens(tokenizer), *_fixed_batch())[
        "loss"].item()


@pytest.fixture(scope="module")
def trained():
    """A 40-step run (deterministic: no time limit, one thread)."""
    torch.set_num_threads(1)
    model, stats = pretrain.train_tiny_clip(seconds=0, max_steps=40, seed=0, threads=1,
                                            log=None, **FAST)
    return model, stats


def test_short_run_lowers_the_contrastive_loss(trained):
    model, stats = trained
    random_model, tokenizer = pretrain.create_tiny_clip(seed=0)  # the run's starting point
    before, after = _loss(random_model, tokenizer), _loss(model, tokenizer)
    assert stats["steps"] == 40
    # measured at one thread: 8.81 -> 8.11 on the held-out batch, 7.35 -> 6.82 in training
    assert after < before - 0.3, (before, after)  # on a fixed held-out batch
    assert stats["final_loss"] < stats["initial_loss"] - 0.3, stats
    for key in ("clip_acc", "pair_acc", "frame_acc", "frame_object_acc"):
        assert 0.0 <= stats[key] <= 1.0
    assert stats["chance_clip"] == pytest.approx(1 / 32)


def test_saved_weights_load_through_load_clip_and_open_clip(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "w.pt"
    pretrain.save_weights(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]  # no temp file left behind
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loaded, _ = load_clip(NAME, str(path))
    direct = open_clip.create_model(NAME, pretrained=str(path))
    rounded, _ = pretrain.create_tiny_clip(seed=5)  # the trained model in float16 storage
    rounded.load_state_dict(pretrain.stored_state(model))
    with torch.no_grad():
        expected = rounded.eval().encode_image(images)
        assert (expected - model.eval().encode_image(images)).abs().max() < 0.05
        torch.testing.assert_close(loaded.eval().encode_image(images), expected)
        torch.testing.assert_close(direct.eval().encode_image(images), expected)


def test_multi_positive_infonce_is_clip_loss_for_distinct_captions():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(2.0)
    ours = pretrain.multi_positive_infonce(img, txt, torch.arange(6), scale)
    ref = open_clip.loss.ClipLoss()(img, txt, scale.exp())
    torch.testing.assert_close(ours, ref)


def test_tracks_match_generate_split_and_the_drawn_object():
    spec = SyntheticSpec(seed=3, train_per_class=2, test_per_class=1)
    plain, tracked = generate_split(spec, "train"), generate_split_with_tracks(spec, "train")
    assert plain.keys() == tracked.keys() - {"centre", "scale"}
    for key in plain:
        np.testing.assert_array_equal(plain[key], tracked[key])
    # red objects (classes of object 0): the red pixels' centroid is the tracked centre
    objects = pretrain._object_of_class()[tracked["label"]]
    clip = int(np.flatnonzero(objects == 0)[0])
    frames = tracked["video"][clip].astype(np.float32)
    red = np.linalg.norm(frames - OBJECT_COLOURS[0], axis=-1) < 60
    ys, xs = np.nonzero(red[0])
    centre = tracked["centre"][clip, 0] * spec.image_size - 0.5
    assert abs(xs.mean() - centre[0]) < 1.5 and abs(ys.mean() - centre[1]) < 1.5


def test_ensure_tiny_clip_builds_other_seeds_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDABLATE_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrain, "BUILD_STEPS", 2)
    path = pretrain.ensure_tiny_clip(seed=1)
    assert path == tmp_path / "vidablate-tiny-synthetic-v2-s1.pt" and path.is_file()
    mtime = path.stat().st_mtime_ns
    monkeypatch.setattr(pretrain, "pretrain_tiny_clip",
                        lambda *a, **k: pytest.fail("rebuilt a cached file"))
    assert pretrain.ensure_tiny_clip(seed=1) == path
    assert path.stat().st_mtime_ns == mtime
    state = torch.load(path, map_location="cpu")
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}


def test_the_shipped_build_is_the_synthetic_default(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDABLATE_CACHE", str(tmp_path))  # nothing is built or cached
    monkeypatch.setattr(pretrain, "pretrain_tiny_clip",
                        lambda *a, **k: pytest.fail("built instead of reading the package"))
    assert pretrain.ensure_tiny_clip(seed=0) == pretrain.SHIPPED
    assert pretrain.weights_checksum(pretrain.SHIPPED) == pretrain.SHIPPED_CHECKSUM
    assert pretrain.SHIPPED.stat().st_size < 8_000_000
    clip, _ = load_clip(NAME, "synthetic")
    state = torch.load(pretrain.SHIPPED, map_location="cpu")
    for key, value in clip.state_dict().items():
        torch.testing.assert_close(value, state[key].to(value.dtype), rtol=0, atol=0)
    assert list(tmp_path.iterdir()) == []


BUILD = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from vidablate import pretrain
model, _ = pretrain.train_tiny_clip(max_steps=6, log=None, batch_size=16, clips_per_class=4,
                                    eval_clips_per_class=1)
print(pretrain.state_checksum(pretrain.stored_state(model)))
"""


def test_builds_are_bit_identical_across_processes_and_thread_settings():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(pretrain.SHIPPED.parents[2])}
    sums = [subprocess.run([sys.executable, "-c", BUILD, str(threads)], env=env, check=True,
                           capture_output=True, text=True).stdout.split()[-1]
            for threads in (1, 2)]
    assert sums[0] == sums[1] and len(sums[0]) == 64
    model, _ = pretrain.create_tiny_clip(seed=0)  # the build did train: not the random init
    assert sums[0] != pretrain.state_checksum(pretrain.stored_state(model))


@pytest.mark.slow
def test_a_full_build_reproduces_the_shipped_weights(tmp_path):
    """About 130 s: the shipped file is what the code builds. Bit for bit on the CPU that
    built it; a CPU whose kernels round differently (another vector ISA: e.g. AVX2 against
    AVX-512 give different checksums on one machine) ends 600 steps within 1 % (relative L2
    over all weights; 0.07 % seen on a Sapphire Rapids), so the build is still this code's."""
    stats = pretrain.pretrain_tiny_clip(tmp_path / "w.pt", log=None)
    assert stats["steps"] == pretrain.BUILD_STEPS
    assert pretrain.weights_checksum(tmp_path / "w.pt") == stats["checksum"]
    if stats["checksum"] == pretrain.SHIPPED_CHECKSUM:
        return
    built, shipped = torch.load(tmp_path / "w.pt"), torch.load(pretrain.SHIPPED)
    assert built.keys() == shipped.keys()
    diff = sum(float((built[k].float() - v.float()).square().sum())
               for k, v in shipped.items() if v.is_floating_point())
    norm = sum(float(v.float().square().sum()) for v in shipped.values() if v.is_floating_point())
    assert (diff / norm) ** 0.5 < 0.01, (diff / norm) ** 0.5


def test_ensure_tiny_clip_concurrent_callers_build_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDABLATE_CACHE", str(tmp_path))
    calls = []

    def fake_build(out, **_):
        calls.append(out)
        time.sleep(0.3)  # the second caller must be waiting on the lock meanwhile
        out.write_bytes(b"weights")

    monkeypatch.setattr(pretrain, "pretrain_tiny_clip", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(pretrain.ensure_tiny_clip(seed=1)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2 and len(set(results)) == 1


def test_synthetic_weights_only_for_the_tiny_backbone():
    with pytest.raises(BackboneError, match=r"model\.pretrained.*model\.backbone.*ViT-B-16"):
        load_clip("ViT-B-16", "synthetic")
