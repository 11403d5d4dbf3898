"""The paper registry: every built-in paper is complete, and a sixth paper is one file's worth of
code plus one registry line. The toy paper below (a learnable per-channel gain on the frame
features) is registered from the test and goes through config validation, ``build_model`` and
a dry run of a table with no edit to ``config.py`` or ``model.py``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from vidablate.config import ConfigError, ExperimentConfig, ModelConfig, model_config_class
from vidablate.errors import ConfigError as GroundConfigError
from vidablate.model import build_model
from vidablate.modules import registry
from vidablate.stages import Paper, Parts, StageContext, ValidationContext
from vidablate.sweep.runner import SweepSettings, run_sweep

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["red square moving left", "red square moving right", "green circle growing"]


# --------------------------------------------------------------------- the toy paper's file


class FrameGain(nn.Module):
    """A learnable per-channel gain on the frame features (a frame refiner)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return frames * self.gain


@dataclass
class ToyKnobs:
    toy: bool = False
    """The toy module on or off."""
    toy_gain: float = 2.0
    """Initial gain (no paper: a test default)."""


def _validate(ctx: ValidationContext) -> None:
    if ctx.model.toy_gain <= 0:
        raise GroundConfigError(f"model.toy_gain must be > 0, got {ctx.model.toy_gain}")


def _build(cfg: ToyKnobs, parts: Parts) -> None:
    if cfg.toy:
        parts.refiners.append(FrameGain(parts.dim, cfg.toy_gain))


TOY = Paper(name="toy", knobs=ToyKnobs, build=_build, validate=_validate,
            claims={"toy": "refiner"}, temporal={}, attention={})


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("paper", registry.papers(), ids=lambda p: p.name)
def test_every_paper_is_complete(paper):
    """Knobs are a dataclass whose fields are in the composed config; claims name boolean
    toggles; the temporal and attention facts name real knobs."""
    assert dataclasses.is_dataclass(paper.knobs)
    names = {f.name for f in dataclasses.fields(paper.knobs)}
    assert names <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert all(isinstance(getattr(ModelConfig(), n), bool) for n in paper.claims), paper.claims
    assert set(paper.claims) <= names
    for toggles in (*paper.temporal.values(), paper.attention):
        assert set(toggles) <= names
    assert paper.build is not None and paper.validate is not None


def test_papers_do_not_share_knob_names():
    seen: dict[str, str] = {}
    for paper in registry.papers():
        for f in dataclasses.fields(paper.knobs):
            assert f.name not in seen, f"{paper.name} and {seen[f.name]} both define {f.name}"
            seen[f.name] = paper.name


def test_a_sixth_paper_is_a_file_and_a_registry_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="toy"):
        ExperimentConfig.from_dict({"model": {"toy": True}})  # not registered: unknown key
    with registry.registered(TOY):
        composed = model_config_class()
        assert issubclass(composed, ModelConfig) and composed().toy is False
        cfg = ExperimentConfig.from_dict({"model": {"toy": True, "sgam": True}}).validate()
        with pytest.raises(ConfigError, match="model.toy_gain"):
            ExperimentConfig.from_dict({"model": {"toy": True, "toy_gain": 0.0}}).validate()

        torch.manual_seed(0)
        model = build_model(cfg.model, 4).train()
        gains = [m for m in model.refiners if isinstance(m, FrameGain)]
        assert len(gains) == 1 and torch.equal(gains[0].gain, torch.full((64,), 2.0))
        video = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        imu = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(2))
        logits, out = model(video, imu, NAMES)
        model.loss(logits, out, torch.tensor([0, 1]))["loss"].backward()
        assert gains[0].gain.grad is not None and gains[0].gain.grad.abs().sum() > 0
        assert any(p is gains[0].gain for p in model.param_groups()["new"])

        space = tmp_path / "toy_table.yaml"
        space.write_text(
            "name: toy_table\npaper: toy\ntitle: Toy table\nsource: a test\n"
            "metrics: {base_acc: Base, novel_acc: Novel, hm: HM}\n"
            "fixed: {trainer.epochs: 1, data.train_per_class: 2, data.test_per_class: 1}\n"
            "rows:\n"
            "  - {name: baseline, toggles: {model.toy: false}, paper: {hm: 1.0}}\n"
            "  - {name: toy, toggles: {model.toy: true, model.toy_gain: 3.0}, paper: {hm: 2.0}}\n")
        assert run_sweep(str(space), settings=SweepSettings(dry_run=True,
                                                            storage_path=str(tmp_path))) is None
        text = capsys.readouterr().out
        assert "toy_table: 2 rows x 1 seeds = 2 trials" in text
        lines = {line.split()[0]: line for line in text.splitlines() if "-s0 " in line}
        assert "toy=True" in lines["toy-s0"] and "toy=False" in lines["baseline-s0"]
        assert "toy_gain=3.0" in lines["toy-s0"] and "estimated device-hours" in text
    with pytest.raises(ConfigError, match="toy"):
        ExperimentConfig.from_dict({"model": {"toy": True}})
