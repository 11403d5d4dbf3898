"""Evaluation protocols as data: the base-to-novel zero-shot split (isclip §III) and the
closed-set protocol (every class trained and tested)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from ..config import DataConfig
from .synthetic import SyntheticSpec, SyntheticVideoIMU, class_names


@dataclass
class ZeroShotData:
    """Train on base classes; evaluate base and novel classes, each in its own label space."""

    train: Dataset
    test_base: Dataset
    test_novel: Dataset | None
    base_names: list[str]
    novel_names: list[str]
    """Empty for the closed-set protocol (then ``test_base`` holds every class)."""

    @property
    def num_base(self) -> int:
        return len(self.base_names)


def base_novel_classes(num_classes: int, base: int) -> tuple[list[int], list[int]]:
    """The first ``base`` class ids are base, the rest novel (isclip §III: first 16 or 24)."""
    if not 1 <= base < num_classes:
        raise ValueError(f"base={base} must be in [1, {num_classes - 1}]")
    return list(range(base)), list(range(base, num_classes))


def synthetic_spec(cfg: DataConfig) -> SyntheticSpec:
    return SyntheticSpec(
        num_classes=cfg.num_classes, train_per_class=cfg.train_per_class,
        test_per_class=cfg.test_per_class, num_frames=cfg.num_frames,
        image_size=cfg.image_size, imu_rate=cfg.imu_rate,
        num_distractors=cfg.num_distractors, seed=cfg.seed,
    )


def build_zero_shot(cfg: DataConfig) -> ZeroShotData:
    """The embedded default: synthetic video+IMU data under ``cfg.protocol``."""
    spec = synthetic_spec(cfg)
    if cfg.protocol == "closed_set":
        base, novel = list(range(cfg.num_classes)), []
    else:
        base, novel = base_novel_classes(cfg.num_classes, cfg.base_classes)
    names = class_names(cfg.num_classes)
    return ZeroShotData(
        train=SyntheticVideoIMU(spec, "train", classes=base),
        test_base=SyntheticVideoIMU(spec, "test", classes=base),
        test_novel=SyntheticVideoIMU(spec, "test", classes=novel) if novel else None,
        base_names=[names[i] for i in base],
        novel_names=[names[i] for i in novel],
    )
