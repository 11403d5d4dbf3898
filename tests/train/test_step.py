"""The efficient training step: one ``train_step`` is the step written out; activation
checkpointing changes memory, not results; the loop compiles the model on request; the host
decides decode validity (no device sync). SDPA use is checked in tests/modules/test_sdpa.py."""

from __future__ import annotations

import pytest
import torch

from vidablate.config import ConfigError, ExperimentConfig
from vidablate.data.synthetic import class_names
from vidablate.model import build_model
from vidablate.train.loop import make_optimizers, seed_everything, train_batch
from vidablate.train.step import train_step

from ..fakes import FakeTrain


def _model(**kw):
    seed_everything(0)
    cfg = ExperimentConfig.from_dict({"model": kw}).validate()
    return build_model(cfg.model, cfg.data.num_frames)


def _batch(b: int = 2):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, 8, 3, 32, 32, generator=g), torch.randn(b, 6, 128, generator=g),
            torch.tensor([0, 3][:b]))


def _loss_and_grads(model):
    video, imu, target = _batch()
    model.train()
    logits, out = model(video, imu, class_names(16))
    loss = model.loss(logits, out, target)["loss"]
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    full = {"trainable_blocks": 4, "distill": False, "cct": True, "mit": True}
    plain = _model(**full)
    loss, grads = _loss_and_grads(plain)
    ckpt = _model(**full)
    ckpt.frame_encoder.set_activation_checkpointing(True)
    calls = []
    original = torch.utils.checkpoint.checkpoint
    try:
        torch.utils.checkpoint.checkpoint = lambda *a, **k: calls.append(1) or original(*a, **k)
        loss2, grads2 = _loss_and_grads(ckpt)
        n_train = len(calls)
        ckpt.eval()
        with torch.no_grad():
            ckpt(_batch()[0], None, class_names(16))
        assert len(calls) == n_train  # evaluation never recomputes
    finally:
        torch.utils.checkpoint.checkpoint = original
    assert n_train == 4  # every trainable block
    torch.testing.assert_close(loss2, loss, rtol=0, atol=1e-6)
    assert grads.keys() == grads2.keys() and len(grads) > 20
    for name in grads:
        torch.testing.assert_close(grads2[name], grads[name], rtol=1e-5, atol=1e-6)


def test_the_loop_compiles_the_model_on_request(tmp_path, monkeypatch):
    from vidablate.train import loop

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, mode: compiled.append(mode) or m)
    fake = FakeTrain(tmp_path)
    exp = {"data": {"train_per_class": 1, "test_per_class": 1},
           "trainer": {"epochs": 1, "batch_size": 8, "num_workers": 0, "compile": True,
                       "compile_mode": "max-autotune", "activation_checkpointing": True}}
    with monkeypatch.context() as m:
        fake.install(m)
        loop.train_loop_per_worker({"experiment": exp, "mlflow_run_id": None})
    assert compiled == ["max-autotune"] and fake.reports[-1]["epoch"] == 1
    with pytest.raises(ConfigError, match="trainer.compile_mode"):
        ExperimentConfig.from_dict({"trainer": {"compile_mode": "fast"}}).validate()


def test_invalid_clips_are_dropped_on_the_host_batch():
    video, imu, target = torch.randn(3, 8, 3, 32, 32), torch.randn(3, 6, 128), torch.arange(3)
    batch = {"video": video, "imu": imu, "label": target,
             "valid": torch.tensor([True, False, True])}
    v, i, t, w = train_batch(batch, None)
    assert v.shape[0] == 2 and t.tolist() == [0, 2] and w == 1.0 and v.device.type == "cpu"
    batch["valid"] = torch.zeros(3, dtype=torch.bool)
    assert train_batch(batch, None)[3] == 0.0


@pytest.mark.parametrize("cached", [False, True], ids=["pixels", "cached-tokens"])
def test_train_step_is_the_step_written_out(cached):
    from vidablate.data import cache

    kw = {"trainable_blocks": 1, "distill": False, "sgam": True}
    video, imu, target = _batch()
    names = class_names(16)
    trained = []
    for use_step in (False, True):
        model = _model(**kw)
        cfg = ExperimentConfig.from_dict({"model": kw}).validate()
        optimizers, _ = make_optimizers(model, cfg.trainer)
        select = cache.token_selection(model.frame_encoder)[0]
        inputs = cache.compute_tokens(model.frame_encoder, video, select) if cached else video
        model.train()
        for weight in (1.0, 0.5):
            if use_step:
                parts = train_step(model, model, optimizers, inputs, imu, names, target,
                                   device=torch.device("cpu"), cached=cached,
                                   label_smoothing=0.1, weight=weight)
            else:
                logits, out = model(None, imu, names, inputs) if cached \
                    else model(inputs, imu, names)
                parts = model.loss(logits.float(), out, target, 0.1)
                for opt in optimizers.values():
                    opt.zero_grad(set_to_none=True)
                (parts["loss"] * weight).backward()
                for opt in optimizers.values():
                    opt.step()
        trained.append((parts["loss"].detach(),
                        {n: p.detach().clone() for n, p in model.named_parameters()}))
    (loss, params), (loss2, params2) = trained
    torch.testing.assert_close(loss2, loss, rtol=0, atol=0)
    assert params.keys() == params2.keys()
    for name in params:
        torch.testing.assert_close(params2[name], params[name], rtol=0, atol=0)


def test_gradient_accumulation_equals_one_large_batch(tmp_path, monkeypatch):
    """Two micro-batches of 4 with their losses halved give the update of one batch of 8 (same
    sample order), so the reported metrics after an epoch agree."""
    from vidablate.train import loop

    reports = {}
    for acc in (1, 2):
        fake = FakeTrain(tmp_path / f"acc{acc}")
        exp = {"model": {"sgam": True, "trainable_blocks": 1},
               "data": {"train_per_class": 1, "test_per_class": 1},
               "trainer": {"epochs": 2, "batch_size": 8, "num_workers": 0,
                           "accumulation_steps": acc, "lr_new": 0.05}}
        with monkeypatch.context() as m:
            fake.install(m)
            loop.train_loop_per_worker({"experiment": exp, "mlflow_run_id": None})
        reports[acc] = fake.reports[-1]
    for key in ("train_loss", "base_acc", "novel_acc"):
        assert reports[2][key] == pytest.approx(reports[1][key], rel=1e-4, abs=1e-4), key
    with pytest.raises(ConfigError, match="accumulation_steps"):
        ExperimentConfig.from_dict({"trainer": {"batch_size": 8, "accumulation_steps": 3}}
                                   ).validate()
