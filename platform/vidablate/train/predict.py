"""Inference of a finished trial on a user's own video (and IMU file for IS-CLIP rows): the
trial's model rebuilt from its resolved config, its checkpoint's trainable tensors loaded,
the clip cut into the trial's evaluation views, and the classes ranked."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig
from ..data.clips import ManifestClips
from ..data.manifest import read_class_names
from ..data.protocols import samplings
from ..data.synthetic import class_names
from ..errors import ConfigError
from ..model import build_model
from .averaging import EpochAverage
from .checkpoint import STATE_FILE, load_weights
from .loop import score_views, seed_everything


@dataclass
class Prediction:
    name: str
    index: int
    score: float
    """Probability (``eval.average=prob``) or mean logit (``logit``) over the views."""


def label_space(cfg: ExperimentConfig) -> list[str]:
    """Every class of the trial's dataset, in id order (base and novel alike)."""
    if cfg.data.is_synthetic:
        return class_names(cfg.data.num_classes)
    if not cfg.data.class_names_file:
        raise ConfigError("the trial's data.class_names_file is empty; pass --classes FILE")
    return read_class_names(cfg.data.class_names_file)


def checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The resolved experiment a checkpoint was trained with (written since the predict
    command exists; older checkpoints need the MLflow run's ``config.yaml``)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: no {STATE_FILE}; is this a trial checkpoint folder?")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not state.get("experiment"):
        raise ConfigError(f"{path} holds no config (written before `vidablate predict` "
                          "existed); pass the trial's MLflow run id instead")
    return dict(state["experiment"])


def predict(checkpoint: str | Path, experiment: dict[str, Any], video: str | Path,
            imu: str | Path | None = None, names: list[str] | None = None, k: int = 5
            ) -> list[Prediction]:
    """The top-``k`` classes of ``video`` (with ``imu`` when the trial's model reads IMU) under
    the trial in ``checkpoint``; ``names`` replaces the label space (CLIP scores any text)."""
    cfg = ExperimentConfig.from_dict(experiment).validate()
    video = Path(video)
    if not video.is_file():
        raise ConfigError(f"video {str(video)!r}: no such file")
    if cfg.model.uses_imu and imu is None:
        raise ConfigError("this trial's model reads IMU (model.sgam/model.sirm/model.imu_*); "
                          "pass --imu FILE (CSV: t, acc_x, acc_y, acc_z, gyro_x, gyro_y, "
                          "gyro_z)")
    if imu is not None and not Path(imu).is_file():
        raise ConfigError(f"imu {str(imu)!r}: no such file")
    names = names or label_space(cfg)
    seed_everything(cfg.trainer.seed)  # the frozen parts are rebuilt as the trial built them
    model = build_model(cfg.model, cfg.data.num_frames)
    state = load_weights(checkpoint, model)
    average = None
    if state.get("epoch_average"):  # the trial evaluated its epoch-averaged weights
        average = EpochAverage(model, cfg.trainer.epoch_average_start)
        average.load_state_dict(state["epoch_average"])
    _, sampling = samplings(cfg)
    record = {"video": str(video.resolve()), "label": 0,
              "imu": str(Path(imu).resolve()) if imu is not None else None}
    clips = ManifestClips([record], video.parent, sampling, decoder=cfg.data.decoder,
                          fps=cfg.data.fps, imu_rate=cfg.data.imu_rate,
                          use_imu=cfg.model.uses_imu, on_corrupt="fail")
    item = clips[0]
    frames, signals = item["video"], item.get("imu")
    views = frames.shape[0] if frames.dim() == 5 else 1
    frames = frames if views > 1 else frames[None]
    if signals is not None:
        signals = signals if views > 1 else signals[None]
    model.eval()
    with torch.no_grad(), (average.applied() if average else contextlib.nullcontext()):
        logits, _ = model(frames, signals, names)
    scores = score_views(logits, 1, views, cfg.eval.average)[0]
    top = scores.topk(min(k, len(names)))
    return [Prediction(names[i], int(i), float(s)) for s, i in zip(top.values, top.indices,
                                                                    strict=True)]
