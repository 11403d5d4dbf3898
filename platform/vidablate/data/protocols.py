"""Evaluation protocols as data: which clips train, which sets are scored against which class
names, and how their accuracies combine.

* ``base_novel`` (isclip §III): train on the first ``base_classes``; score base and novel
  clips each in their own label space; report base/novel accuracy and their harmonic mean.
* ``closed_set``: train and test on every class; top-1/top-5.
* ``cross_dataset`` (xclip Table 3, motionprompt Tables 6 and 7): train on every class of the source
  dataset; score each target split zero-shot with the target's class names; report the mean
  and std over splits.
* k-shot (xclip Table 5, motionprompt Tables 4-5, omniclip Table 5): ``data.k_shot`` training clips per class drawn
  with an explicit seed; the drawn list is returned so the runner can save it with the run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import ConfigError
from .clips import ClipSampling, ManifestClips
from .manifest import manifest_records, read_class_names, read_manifest
from .synthetic import SyntheticSpec, SyntheticVideoIMU, class_names
from .video import AugmentSpec

if TYPE_CHECKING:  # annotations only: the configs are read by attribute (config sits above data)
    from ..config import DataConfig, ExperimentConfig


@dataclass
class EvalSet:
    """One scored set: clips, the class names they are scored against, and the offset that
    maps a clip's global label to an index into ``names``."""

    name: str
    dataset: Dataset
    names: list[str]
    label_offset: int = 0


@dataclass
class ProtocolData:
    protocol: str
    train: Dataset | None
    train_names: list[str]
    """Class names of the training label space (the base classes for base_novel)."""
    evals: list[EvalSet]
    kshot: list[dict[str, Any]] = field(default_factory=list)
    """The drawn k-shot training list (empty without k-shot)."""


def base_novel_classes(num_classes: int, base: int) -> tuple[list[int], list[int]]:
    """The first ``base`` class ids are base, the rest novel (isclip §III: first 16 or 24)."""
    if not 1 <= base < num_classes:
        raise ValueError(f"base={base} must be in [1, {num_classes - 1}]")
    return list(range(base)), list(range(base, num_classes))


PROTOCOL_METRICS = {"base_novel": ("base_acc", "novel_acc", "hm"),
                    "closed_set": ("top1", "top5"), "cross_dataset": ("top1", "top5")}
"""The headline metrics each protocol reports."""


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2·B·N / (B + N); 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def protocol_metrics(protocol: str, results: dict[str, tuple[float, float]]
                     ) -> dict[str, float]:
    """Combine per-set (top-1, top-5) into the protocol's reported metrics."""
    if protocol == "base_novel":
        base, novel = results["base"][0], results["novel"][0]
        return {"base_acc": base, "novel_acc": novel, "hm": harmonic_mean(base, novel)}
    if protocol == "closed_set":
        top1, top5 = results["test"]
        return {"top1": top1, "top5": top5}
    top1 = np.array([r[0] for r in results.values()], dtype=np.float64)
    top5 = np.array([r[1] for r in results.values()], dtype=np.float64)
    out = {"top1": float(top1.mean()), "top5": float(top5.mean()),
           "top1_std": float(top1.std(ddof=1)) if len(top1) > 1 else 0.0,
           "top5_std": float(top5.std(ddof=1)) if len(top5) > 1 else 0.0}
    out.update({f"top1_{name}": float(r[0]) for name, r in results.items()})
    return out


def kshot_indices(labels: np.ndarray, classes: list[int], k: int, seed: int) -> np.ndarray:
    """``k`` indices per class (ascending), drawn without replacement by a generator seeded
    with ``seed`` alone, so the same seed gives the same list on every machine."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5407]))
    chosen = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        if len(pool) < k:
            raise ConfigError(f"data.k_shot={k}: class {c} has only {len(pool)} training clip(s)")
        chosen.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def synthetic_spec(cfg: DataConfig, split_frames: bool = True) -> SyntheticSpec:
    return SyntheticSpec(
        num_classes=cfg.num_classes, train_per_class=cfg.train_per_class,
        test_per_class=cfg.test_per_class,
        num_frames=(cfg.source_frames or cfg.num_frames) if split_frames else cfg.num_frames,
        image_size=cfg.image_size, imu_rate=cfg.imu_rate,
        num_distractors=cfg.num_distractors, seed=cfg.seed,
        outside_object=cfg.outside_object, distractor_style=cfg.distractor_style,
        object_scale_range=cfg.object_scale_range,
    )


def samplings(cfg: ExperimentConfig) -> tuple[ClipSampling, ClipSampling]:
    """(train, eval) clip sampling from DataConfig and EvalConfig."""
    d, e = cfg.data, cfg.eval
    augment = AugmentSpec(flip=d.aug_flip, color_jitter=d.aug_color_jitter,
                          grayscale=d.aug_grayscale, enabled=d.augment, style=d.aug_style)
    common = dict(num_frames=d.num_frames, image_size=d.image_size, rate=d.sampling_rate,
                  imu_span=d.imu_span)
    return (ClipSampling(**common, mode=d.sampling, train=True, augment=augment),
            ClipSampling(**common, mode=e.sampling or d.sampling, train=False,
                         temporal_views=e.temporal_views, spatial_crops=e.spatial_crops))


def build_protocol(cfg: ExperimentConfig) -> ProtocolData:
    """The datasets of one trial under ``cfg.data.protocol``."""
    d = cfg.data
    seed = cfg.trainer.seed if d.k_shot_seed < 0 else d.k_shot_seed
    train_s, eval_s = samplings(cfg)
    if d.is_synthetic:
        return _synthetic(cfg, train_s, eval_s, seed)
    return _manifest(cfg, train_s, eval_s, seed)


def train_class_names(cfg: ExperimentConfig) -> list[str]:
    """The class names a trial trains on (the base classes under base-to-novel), read as
    ``build_protocol`` reads them, without its clips."""
    d = cfg.data
    names = class_names(d.num_classes) if d.is_synthetic else read_class_names(
        d.class_names_file)
    return [names[i] for i in _classes(d, len(names))[0]]


def _classes(cfg: DataConfig, num_classes: int) -> tuple[list[int], list[int]]:
    if cfg.protocol == "base_novel":
        return base_novel_classes(num_classes, cfg.base_classes)
    return list(range(num_classes)), []


def _synthetic(cfg: ExperimentConfig, train_s: ClipSampling, eval_s: ClipSampling,
               seed: int) -> ProtocolData:
    d = cfg.data
    if d.protocol == "cross_dataset":
        raise ConfigError("data.protocol='cross_dataset' evaluates on manifest files; the "
                          "synthetic dataset has no second dataset to transfer to")
    # an unvalidated config may still carry data.seed=-1 (= trainer.seed)
    spec = synthetic_spec(d if d.seed >= 0 else dataclasses.replace(d, seed=cfg.trainer.seed))
    base, novel = _classes(d, d.num_classes)
    names = class_names(d.num_classes)
    train: Dataset = SyntheticVideoIMU(spec, "train", classes=base, sampling=train_s)
    kshot: list[dict[str, Any]] = []
    if d.k_shot:
        rows = kshot_indices(train.labels, base, d.k_shot, seed)
        kshot = [{"index": int(train.indices[i]), "label": int(train.labels[i]),
                  "video": f"synthetic:{d.seed}:train:{int(train.indices[i])}"} for i in rows]
        train = Subset(train, rows.tolist())
    evals = [EvalSet("base" if novel else "test",
                     SyntheticVideoIMU(spec, "test", classes=base, sampling=eval_s),
                     [names[i] for i in base])]
    if novel:
        evals.append(EvalSet("novel", SyntheticVideoIMU(spec, "test", classes=novel,
                                                         sampling=eval_s),
                             [names[i] for i in novel], len(base)))
    return ProtocolData(d.protocol, train, [names[i] for i in base], evals, kshot)


def _manifest(cfg: ExperimentConfig, train_s: ClipSampling, eval_s: ClipSampling,
              seed: int) -> ProtocolData:
    d = cfg.data
    names = read_class_names(d.class_names_file)
    if len(names) != d.num_classes:
        raise ConfigError(f"data.num_classes={d.num_classes} but data.class_names_file="
                          f"{d.class_names_file!r} names {len(names)} classes")
    base, novel = _classes(d, len(names))
    use_imu = cfg.model.uses_imu
    kwargs = dict(decoder=d.decoder, fps=d.fps, imu_rate=d.imu_rate, use_imu=use_imu,
                  on_corrupt=d.on_corrupt)

    def clips(manifest: str, sampling: ClipSampling, keep: list[int] | None) -> ManifestClips:
        records = manifest_records(read_manifest(manifest))
        if keep is not None:
            wanted = set(keep)
            records = [r for r in records if int(r["label"]) in wanted]
        root = d.video_root or str(Path(manifest).parent)
        return ManifestClips(records, root, sampling, **kwargs)

    train: Dataset | None = None
    kshot: list[dict[str, Any]] = []
    if d.train_manifest and cfg.trainer.epochs > 0:
        full = clips(d.train_manifest, train_s, base)
        train = full
        if d.k_shot_file:
            chosen = _read_kshot_file(d.k_shot_file, full)
        elif d.k_shot:
            chosen = kshot_indices(full.labels, base, d.k_shot, seed)
        else:
            chosen = None
        if chosen is not None:
            full.records = [full.records[i] for i in chosen]
            full.labels = full.labels[chosen]
            kshot = [{"index": int(i), "label": int(r["label"]), "video": str(r["video"])}
                     for i, r in zip(chosen, full.records, strict=True)]
    if d.protocol == "cross_dataset":
        target = read_class_names(d.cross_class_names_file)
        evals = []
        for i, manifest in enumerate(d.cross_manifests):
            records = manifest_records(read_manifest(manifest))
            root = d.video_root or str(Path(manifest).parent)
            evals.append(EvalSet(f"split{i + 1}", ManifestClips(records, root, eval_s,
                                                                **kwargs), target))
        return ProtocolData(d.protocol, train, names, evals, kshot)
    evals = [EvalSet("base" if novel else "test", clips(d.test_manifest, eval_s, base),
                     [names[i] for i in base])]
    if novel:
        evals.append(EvalSet("novel", clips(d.test_manifest, eval_s, novel),
                             [names[i] for i in novel], len(base)))
    return ProtocolData(d.protocol, train, [names[i] for i in base], evals, kshot)


def _read_kshot_file(path: str, train: ManifestClips) -> np.ndarray:
    """Indices of a saved draw (``kshot_split.json``), matched by video path."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"data.k_shot_file={path!r}: {err}") from None
    where = {str(r["video"]): i for i, r in enumerate(train.records)}
    missing = [e["video"] for e in saved if str(e.get("video")) not in where]
    if missing:
        raise ConfigError(f"data.k_shot_file={path!r}: {len(missing)} clip(s) not in "
                          f"data.train_manifest, e.g. {missing[:3]}")
    return np.array(sorted(where[str(e["video"])] for e in saved), dtype=np.int64)
