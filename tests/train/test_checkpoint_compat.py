"""A checkpoint written before the package redesign (IS-CLIP modules passed to ``VideoCLIP`` as
constructor arguments) still resumes: parameter names, shapes and the frozen fingerprint of the
model built today match it. The fixture is one step of SIRM + SGAM training on vidablate-tiny
(``trainable_blocks=1``, ``imu_width=8``, ``sgam_hidden=8``), saved by ``save_state``."""

from __future__ import annotations

from pathlib import Path

import torch

from vidablate.config import ExperimentConfig
from vidablate.model import build_model
from vidablate.train.checkpoint import STATE_FILE, load_state
from vidablate.train.loop import make_optimizers, seed_everything

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "isclip_state_before_redesign"


def test_checkpoint_from_before_the_redesign_resumes():
    cfg = ExperimentConfig.from_dict({"model": {"sirm": True, "sgam": True, "imu_width": 8,
                                                "sgam_hidden": 8, "trainable_blocks": 1}}
                                     ).validate()
    seed_everything(0)
    model = build_model(cfg.model, 8)
    optimizers, schedulers = make_optimizers(model, cfg.trainer)
    state = load_state(FIXTURE, model, optimizers, schedulers)
    saved = torch.load(FIXTURE / STATE_FILE, map_location="cpu", weights_only=True)["trainable"]
    assert {n.split(".")[0] for n in saved} >= {"imu", "sirm", "sgam", "frame_encoder"}
    params = dict(model.named_parameters())
    for name, tensor in saved.items():
        assert torch.equal(params[name].detach(), tensor), name
    assert state["epoch"] == 1 and state["mlflow_run_id"] == "run-before-redesign"
    assert optimizers["new"].state_dict()["state"], "the SGD momentum buffers were restored"
