"""Pre-flight data checks on the driver, before any trial starts: every manifest of every trial
is validated once (files, decodability, labels, IMU), class-name files are matched to
``data.num_classes``, and k-shot draws are checked to be possible. All problems of all
manifests are reported together in one error."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .manifest import ManifestError, read_class_names, read_manifest
from .protocols import kshot_indices
from .validate import validate_manifest

if TYPE_CHECKING:  # annotations only: the caller builds the configs (config sits above data)
    from ..config import ExperimentConfig


def _jobs(cfg: ExperimentConfig) -> list[tuple[str, str, str, str]]:
    """(field, manifest, class-names file, root) for every manifest the trial reads."""
    d = cfg.data
    jobs = []
    if d.train_manifest and cfg.trainer.epochs > 0:
        jobs.append(("data.train_manifest", d.train_manifest, d.class_names_file))
    if d.protocol != "cross_dataset":
        jobs.append(("data.test_manifest", d.test_manifest, d.class_names_file))
    for m in d.cross_manifests:
        jobs.append(("data.cross_manifests", m, d.cross_class_names_file))
    return [(f, m, c, d.video_root or str(Path(m).parent)) for f, m, c in jobs]


def check_data(experiments: list[ExperimentConfig], workers: int = 8) -> list[str]:
    """Validate the data of every experiment (built ``ExperimentConfig`` objects); returns one
    line per manifest checked and raises ConfigError listing every problem found."""
    problems: list[str] = []
    lines: list[str] = []
    seen: set[tuple[Any, ...]] = set()
    for cfg in experiments:
        d = cfg.data
        if d.is_synthetic or not d.validate:
            continue
        names: dict[str, list[str]] = {}
        for field, manifest, class_file, root in _jobs(cfg):
            if class_file not in names:
                try:
                    names[class_file] = read_class_names(class_file)
                except (ManifestError, OSError) as err:
                    problems.append(f"{class_file}: {err}")
                    continue
            key = (manifest, class_file, root, d.validate_decode, cfg.model.uses_imu, d.decoder)
            if key in seen:
                continue
            seen.add(key)
            try:
                report = validate_manifest(
                    manifest, root=root, class_names=names[class_file],
                    decode=d.validate_decode, imu=True if cfg.model.uses_imu else None,
                    backend=d.decoder, workers=workers, fps=d.fps)
            except (ManifestError, OSError) as err:
                problems.append(f"{field}: {err}")
                continue
            lines.append(f"{field}: {manifest}: {report.checked} clips checked, "
                         f"{sum(len(v) for v in report.problems.values())} problem(s)")
            if not report.ok:
                problems.append(f"{field}: {report.summary()}")
            gap = _missing_classes(cfg, field, manifest, names[class_file])
            if gap:
                problems.append(gap)
        if d.class_names_file in names and len(names[d.class_names_file]) != d.num_classes:
            problems.append(f"data.num_classes={d.num_classes} but data.class_names_file="
                            f"{d.class_names_file} names {len(names[d.class_names_file])} classes")
        if d.k_shot and d.train_manifest and cfg.trainer.epochs > 0 and not d.k_shot_file:
            try:
                labels = read_manifest(d.train_manifest).column("label").to_numpy()
                classes = (list(range(d.base_classes)) if d.protocol == "base_novel"
                           else list(range(d.num_classes)))
                kshot_indices(labels, classes, d.k_shot, 0)
            except (ConfigError, OSError) as err:
                problems.append(f"data.train_manifest={d.train_manifest}: {err}")
    if problems:
        raise ConfigError("pre-flight data check failed (no trial was started): " + "; ".join(
            " ".join(p.split()) for p in dict.fromkeys(problems)))
    return lines


def classes_in_use(cfg: ExperimentConfig, field: str, num_names: int) -> list[int]:
    """The class ids a split must hold clips of: the base classes for training under
    base-to-novel (isclip §III), every class otherwise (test: base and novel)."""
    d = cfg.data
    if field == "data.train_manifest" and d.protocol == "base_novel":
        return list(range(min(d.base_classes, num_names)))
    return list(range(num_names))


def _missing_classes(cfg: ExperimentConfig, field: str, manifest: str,
                     names: list[str]) -> str | None:
    """An empty split, or classes in use with no clip in it: the trial would log an
    untrained model or an accuracy over nothing as if it were a result."""
    labels = read_manifest(manifest).column("label").to_numpy()
    if len(labels) == 0:
        return f"{field}={manifest}: the manifest has no clips"
    present = set(int(v) for v in labels)
    missing = [c for c in classes_in_use(cfg, field, len(names)) if c not in present]
    if not missing:
        return None
    shown = ", ".join(f"{c} {names[c]!r}" for c in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return (f"{field}={manifest}: no clips of {len(missing)} of the "
            f"{len(classes_in_use(cfg, field, len(names)))} classes in use ({shown}{more})")
