"""Converters to dataset manifests (``vidablate.data.manifest``) from the list formats of the
papers' code bases, and the export of the embedded synthetic dataset as real files.

* ``from_path_label_txt``: X-CLIP/ViFi-CLIP ``path label`` lists and TSN ``path num_frames
  label`` lists; ``from_path_label_csv``: PySlowFast ``path,label`` csv; ``from_folder_tree``:
  one subfolder of videos per class.
* UESTC-MMEA-CL: ``from_uestc_mmea_cl`` (a split list; converts each clip's raw sensor csv,
  ``read_uestc_sensor_csv``, to the project IMU format), ``uestc_mmea_cl_class_names`` and the
  sensor constants ``UESTC_*``.
* ``export_synthetic``: the synthetic set as mp4 videos, IMU csvs, one manifest per split and
  a class-name file.

Every converter returns a manifest table checked like ``read_manifest``; bad list lines are
reported all at once, by line number. ``jobs/prepare_data.py`` is the command line.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .imu import ImuFormatError, ImuStream, write_imu
from .manifest import (
    VIDEO_EXTENSIONS,
    ManifestError,
    _names,
    _normalise,
    _read_lines,
    _table_from_records,
    _under,
    write_class_names,
    write_manifest,
)

# ------------------------------------------------------------------------- list files


def _list_fields(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of a list file, blank and ``#`` lines
    skipped."""
    out = []
    for lineno, raw in enumerate(_read_lines(path, "list file"), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((lineno, line.split()))
    return out



def _stored_path(path: str, root: str | Path | None) -> str:
    """A path as written in a list, made relative to ``root`` when it is absolute and under it."""
    if root is not None and Path(path).is_absolute():
        full, base = Path(os.path.abspath(path)), Path(os.path.abspath(root))
        if _under(full, base):
            return full.relative_to(base).as_posix()
    return path


def _raise_collected(errors: list[str], source: Path | str, limit: int = 10) -> None:
    """Raise one ManifestError listing every collected line problem (the first ``limit``)."""
    if errors:
        shown = "; ".join(errors[:limit])
        more = f"; ... {len(errors) - limit} more" if len(errors) > limit else ""
        raise ManifestError(f"{source}: {len(errors)} problem(s): {shown}{more}")


def _parse_label(text: str, num_classes: int, where: str, errors: list[str]) -> int | None:
    """A class id in 0..num_classes-1, or None after recording the problem."""
    try:
        label = int(text)
    except ValueError:
        errors.append(f"{where}: label {text!r} is not an integer")
        return None
    if not 0 <= label < num_classes:
        errors.append(f"{where}: label {label} outside 0..{num_classes - 1} ({num_classes} classes)")
        return None
    return label


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _finish(rows: list[dict[str, Any]], source: Path | str, split: str | None) -> pa.Table:
    if not rows:
        raise ManifestError(f"{source}: no clips listed")
    if split is not None:
        for row in rows:
            row["split"] = split
    return _normalise(_table_from_records(rows, str(source)), str(source))


def from_path_label_txt(
    list_file: str | Path,
    *,
    root: str | Path | None = None,
    class_names: Sequence[str] | str | Path,
    split: str | None = None,
) -> pa.Table:
    """A ``path label`` list (X-CLIP / ViFi-CLIP) or ``path num_frames label`` list (TSN/TBN),
    told apart by the field count; whitespace separated (paths cannot contain spaces), blank
    lines and ``#`` comments skipped. Absolute paths under ``root`` are stored relative to it.
    Every bad line is reported at once, by line number."""
    list_file = Path(list_file)
    names = _names(class_names)
    rows, errors = [], []
    for lineno, fields in _list_fields(list_file):
        where = f"line {lineno}"
        if len(fields) not in (2, 3):
            errors.append(
                f"{where}: {len(fields)} fields, expected 'path label' or 'path num_frames label'"
            )
            continue
        if len(fields) == 3 and not _is_int(fields[1]):
            errors.append(f"{where}: num_frames {fields[1]!r} is not an integer")
            continue
        label = _parse_label(fields[-1], len(names), where, errors)
        if label is not None:
            rows.append(
                {"video": _stored_path(fields[0], root), "label": label, "label_name": names[label]}
            )
    _raise_collected(errors, list_file)
    return _finish(rows, list_file, split)


def from_path_label_csv(
    csv_file: str | Path,
    *,
    root: str | Path | None = None,
    class_names: Sequence[str] | str | Path,
    sep: str = ",",
    split: str | None = None,
) -> pa.Table:
    """A PySlowFast-style ``path<sep>label`` csv; a first row whose label field is not an
    integer is a header. ``sep`` of whitespace splits on any run of whitespace."""
    csv_file = Path(csv_file)
    names = _names(class_names)
    lines = _read_lines(csv_file, "csv file")
    rows, errors, first = [], [], True
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        fields = raw.split() if not sep.strip() else next(csv.reader([raw], delimiter=sep))
        fields = [f.strip() for f in fields]
        where = f"line {lineno}"
        if first and len(fields) >= 2 and not _is_int(fields[-1]):
            first = False  # header row
            continue
        first = False
        if len(fields) != 2:
            errors.append(f"{where}: {len(fields)} fields, expected 'path{sep}label'")
            continue
        label = _parse_label(fields[1], len(names), where, errors)
        if label is not None:
            rows.append(
                {"video": _stored_path(fields[0], root), "label": label, "label_name": names[label]}
            )
    _raise_collected(errors, csv_file)
    return _finish(rows, csv_file, split)


def _folder_label_name(name: str) -> str:
    return name.replace("_", " ").strip()


def from_folder_tree(
    root: str | Path,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    *,
    split: str | None = None,
) -> tuple[pa.Table, list[str]]:
    """One subfolder per class (classes = sorted folder names, label = index, names with
    ``_`` read as spaces); every video below a class folder (any depth) with one of
    ``extensions`` is a clip, stored relative to ``root``. Returns (table, class names)."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset root is not a directory")
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise ManifestError(f"{root}: no class folders")
    names = [_folder_label_name(d.name) for d in folders]
    if len(set(names)) != len(names):
        raise ManifestError(f"{root}: class folder names collide once '_' reads as a space")
    rows = []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        rows += [
            {"video": p.relative_to(root).as_posix(), "label": label, "label_name": names[label]}
            for p in files
        ]
    if not rows:
        raise ManifestError(f"{root}: no videos with extensions {sorted(exts)} in class folders")
    return _finish(rows, root, split), names


# ---------------------------------------------------------------------- UESTC-MMEA-CL

UESTC_ACC_SENSITIVITY = 16384.0
"""Raw accelerometer counts per g (the dataset page's "Racc = 16384": an MPU-6050-class IMU
at +-2 g). The authors' training code (UESTC_MMEA_CL_main, utils/mydata_manager.py) divides by
8192 instead (+-4 g); pass ``acc_sensitivity=8192`` to follow it."""
UESTC_GYRO_SENSITIVITY = 16.4
"""Raw gyroscope counts per degree/s (the dataset page's "Rgyro = 16.4": +-2000 deg/s)."""
UESTC_IMU_RATE_HZ = 25.0
"""Sensor rows per second. Not documented: the authors' lists give about one sensor row per
video frame, and 30.4 hours over ~6,400 clips of ~420 frames implies ~25 frames/s."""
UESTC_CLASS_DIR = re.compile(r"^(\d+)_(.+)$")
_UESTC_CLIP = re.compile(r"^(\d+_.+?)_\d{4}(?:_\d{2}){5}$")


def read_uestc_sensor_csv(
    path: str | Path,
    *,
    acc_sensitivity: float = UESTC_ACC_SENSITIVITY,
    gyro_sensitivity: float = UESTC_GYRO_SENSITIVITY,
    rate_hz: float = UESTC_IMU_RATE_HZ,
) -> ImuStream:
    """One UESTC-MMEA-CL sensor csv (six raw integer columns: acc x, y, z, gyro x, y, z; no
    header, though a non-numeric first line is skipped) in project units:

        acc [g]      = raw_acc / acc_sensitivity                 (default 16384 counts/g)
        gyro [rad/s] = raw_gyro / gyro_sensitivity * pi / 180    (default 16.4 counts/(deg/s))

    Row k is timed at t = (k + 0.5) / rate_hz seconds from the video start (one row per
    ``1/rate_hz``, row k aligned with video frame k when the rates match, as the authors'
    loader pairs them). Columns after the sixth are ignored. Errors name the file and line.
    """
    path = Path(path)
    lines = _read_lines(path, "sensor file", error=ImuFormatError)
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.replace(";", ",").split(",")]
        if len(fields) == 1:
            fields = line.split()
        try:
            values = [float(f) for f in fields[:6]]
        except ValueError:
            if not rows and lineno == 1:  # a header line
                continue
            raise ImuFormatError(f"{path}: line {lineno}: non-numeric sensor value: {line!r}") from None
        if len(values) < 6:
            raise ImuFormatError(
                f"{path}: line {lineno}: {len(fields)} columns, expected 6 "
                "(acc x, y, z, gyro x, y, z)"
            )
        rows.append(values)
    if not rows:
        raise ImuFormatError(f"{path}: no sensor rows")
    raw = np.asarray(rows, dtype=np.float64)
    values = np.empty_like(raw)
    values[:, :3] = raw[:, :3] / acc_sensitivity
    values[:, 3:] = raw[:, 3:] / gyro_sensitivity * (math.pi / 180.0)
    t = (np.arange(len(raw), dtype=np.float64) + 0.5) / rate_hz
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        raise ImuFormatError(f"{path}: row {bad[0][0]}: value is not finite")
    return ImuStream(t=t, values=values.astype(np.float32))


def _uestc_key(token: str) -> tuple[str, str] | None:
    """(class folder, clip name) from a list path: the authors' absolute paths, the released
    ``yourdataset_path/data/<class>/<clip>`` form, ``<class>/<clip>[.mp4]`` or a bare clip."""
    parts = [p for p in re.split(r"[\\/]", token) if p]
    if not parts:
        return None
    clip = parts[-1]
    for ext in (*VIDEO_EXTENSIONS, ".csv"):
        if clip.lower().endswith(ext):
            clip = clip[: -len(ext)]
    if len(parts) >= 2:
        return parts[-2], clip
    m = _UESTC_CLIP.match(clip)
    return (m.group(1), clip) if m else None


def uestc_mmea_cl_class_names(
    root: str | Path,
    list_files: Sequence[str | Path] = (),
    *,
    video_dir: str = "video",
    sensor_dir: str = "sensor",
) -> list[str]:
    """Class names from the ``<n>_<name>`` class folders (id n - 1, ``_`` read as a space, e.g.
    ``32_watch_TV`` -> 31 "watch TV"), found under ``root/video_dir``, ``root/sensor_dir`` and
    in the list files. Every id 0..C-1 must be seen (else pass the names explicitly)."""
    root = Path(root)
    folders: set[str] = set()
    for sub in (video_dir, sensor_dir):
        if (root / sub).is_dir():
            folders |= {d.name for d in (root / sub).iterdir() if d.is_dir()}
    for list_file in list_files:
        for line in Path(list_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key = _uestc_key(line.split()[0])
                if key:
                    folders.add(key[0])
    by_id: dict[int, str] = {}
    for folder in folders:
        m = UESTC_CLASS_DIR.match(folder)
        if m:
            cid, name = int(m.group(1)) - 1, _folder_label_name(m.group(2))
            if by_id.get(cid, name) != name:
                raise ManifestError(f"{root}: class {cid + 1} has two folder names")
            by_id[cid] = name
    if not by_id:
        raise ManifestError(f"{root}: no '<n>_<name>' class folders under {video_dir}/ or "
                            f"{sensor_dir}/ or in the lists; pass the class names")  # fmt: skip
    missing = sorted(set(range(max(by_id) + 1)) - set(by_id))
    if missing or min(by_id) < 0:
        raise ManifestError(
            f"{root}: class folders for ids {[m + 1 for m in missing]} not found "
            "(folders are numbered from 1); pass the class names"
        )
    return [by_id[i] for i in range(len(by_id))]


def from_uestc_mmea_cl(
    root: str | Path,
    list_file: str | Path,
    *,
    class_names: Sequence[str] | str | Path | None = None,
    imu_dir: str | Path | None = None,
    video_dir: str = "video",
    sensor_dir: str = "sensor",
    frames_dir: str | Path | None = None,
    acc_sensitivity: float = UESTC_ACC_SENSITIVITY,
    gyro_sensitivity: float = UESTC_GYRO_SENSITIVITY,
    imu_rate_hz: float = UESTC_IMU_RATE_HZ,
    split: str | None = None,
    workers: int = 4,
) -> pa.Table:
    """A manifest of one UESTC-MMEA-CL split list, converting each clip's sensor csv.

    Layout (dataset page and the authors' code): ``root/video/<n>_<class>/<clip>.mp4``,
    ``root/sensor/<n>_<class>/<clip>.csv`` and list files ``train.txt``/``val.txt``/
    ``test.txt``. List lines accepted (whitespace separated, last field the 0-based label):
    ``path n_rgb_frames n_sensor_rows label`` (the authors' format), ``path num_frames label``
    and ``path label``; the path may be the authors' absolute path, ``yourdataset_path/data/
    <n>_<class>/<clip>``, ``<n>_<class>/<clip>[.mp4]`` or a bare clip name (its class folder
    read from the name). A label must equal the folder number - 1.

    ``frames_dir`` (relative to root, or absolute): read clips as folders of extracted frames
    ``frames_dir/<n>_<class>/<clip>/`` (the authors' Frame-extractor layout) instead of mp4s;
    the loader's ``data.fps`` then gives their frame rate. Sensor files are converted
    (``read_uestc_sensor_csv``) to ``imu_dir/<n>_<class>/<clip>.csv`` (default ``root/imu``);
    ones that are missing or unreadable are reported in one warning and left for
    ``validate_manifest`` to flag ("missing imu"). Paths under ``root`` are stored relative.
    """
    root, list_file = Path(root), Path(list_file)
    names = (
        _names(class_names)
        if class_names is not None
        else uestc_mmea_cl_class_names(root, [list_file], video_dir=video_dir, sensor_dir=sensor_dir)
    )
    imu_dir = Path(imu_dir) if imu_dir is not None else root / "imu"
    rows, errors, jobs = [], [], []
    for lineno, fields in _list_fields(list_file):
        where = f"line {lineno}"
        if not 2 <= len(fields) <= 4 or not all(_is_int(f) for f in fields[1:-1]):
            errors.append(
                f"{where}: expected 'path [n_frames [n_sensor]] label', got {len(fields)} fields"
            )
            continue
        label = _parse_label(fields[-1], len(names), where, errors)
        key = _uestc_key(fields[0])
        if key is None:
            errors.append(f"{where}: cannot find '<class folder>/<clip>' in {fields[0]!r}")
            continue
        folder, clip = key
        m = UESTC_CLASS_DIR.match(folder)
        if label is None:
            continue
        if m and int(m.group(1)) - 1 != label:
            errors.append(f"{where}: label {label} but class folder {folder!r} is class "
                          f"{int(m.group(1)) - 1} (folder number - 1)")  # fmt: skip
            continue
        if frames_dir is not None:
            video = Path(frames_dir) / folder / clip
            video = video if video.is_absolute() else root / video
        else:
            video = root / video_dir / folder / f"{clip}.mp4"
        imu_path = imu_dir / folder / f"{clip}.csv"
        jobs.append((root / sensor_dir / folder / f"{clip}.csv", imu_path))
        rows.append({
            "video": _stored_path(str(video), root), "label": label, "label_name": names[label],
            "imu": _stored_path(str(imu_path), root),
        })  # fmt: skip
    _raise_collected(errors, list_file)

    def convert(job: tuple[Path, Path]) -> tuple[str | None, float | None]:
        src, dst = job
        try:
            stream = read_uestc_sensor_csv(
                src, acc_sensitivity=acc_sensitivity, gyro_sensitivity=gyro_sensitivity,
                rate_hz=imu_rate_hz,
            )  # fmt: skip
            write_imu(dst, stream.t, stream.values)
        except (ImuFormatError, OSError, ValueError) as exc:
            return str(exc), None
        return None, float(np.median(np.linalg.norm(stream.values[:, :3], axis=1)))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(convert, jobs))
    failed = [msg for msg, _ in results if msg]
    if failed:
        warnings.warn(
            f"{list_file}: {len(failed)} sensor file(s) not converted (their rows keep the "
            f"imu path; validation reports them): {'; '.join(failed[:5])}",
            stacklevel=2,
        )
    gravity = [g for _, g in results if g is not None]
    if gravity and not 0.7 <= float(np.median(gravity)) <= 1.4:
        warnings.warn(
            f"{list_file}: median |acc| over clips is {np.median(gravity):.2f} g, expected about "
            f"1 g (gravity); check acc_sensitivity (used {acc_sensitivity} counts/g)",
            stacklevel=2,
        )
    return _finish(rows, list_file, split)



# --------------------------------------------------------------------------- synthetic


def export_synthetic(
    out_dir: str | Path,
    spec: Any,
    *,
    splits: Sequence[str] = ("train", "test"),
    fps: float = 8.0,
) -> dict[str, Path]:
    """Write the embedded synthetic dataset (``synthetic.generate_split``) as real files: per
    clip ``videos/<split>/<split>_<i>.mp4`` and ``imu/<split>/<split>_<i>.csv`` (acc in g, gyro
    in rad/s, ``spec.imu_rate * fps`` Hz; sample k of frame t at (t + (k + 0.5) / imu_rate) /
    fps seconds), a manifest ``<split>.parquet`` per split (paths relative to ``out_dir``) and
    ``classnames.csv``. Returns {split: manifest path, ..., "classnames": csv path}. The default
    fps = 8 is the generator's physical frame rate (``synthetic.FRAME_DT``)."""
    # torch + torchvision (via .synthetic, .video): only the exporter needs them, so the list
    # converters and `prepare_data --help` start without them (~4 s).
    from .synthetic import class_names, generate_split
    from .video import write_video

    if spec.image_size % 2:
        raise ValueError(f"image_size must be even to encode H.264 video, got {spec.image_size}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out = Path(out_dir)
    names = class_names(spec.num_classes)
    T, r = spec.num_frames, spec.imu_rate
    t = (np.arange(T * r, dtype=np.float64) + 0.5) / (r * fps)
    paths: dict[str, Path] = {}
    for split in splits:
        data = generate_split(spec, split)
        rows = []
        for i, label in enumerate(data["label"].tolist()):
            video, imu = f"videos/{split}/{split}_{i:05d}.mp4", f"imu/{split}/{split}_{i:05d}.csv"
            write_video(out / video, data["video"][i], fps=fps)
            write_imu(out / imu, t, data["imu"][i].T)
            rows.append({"video": video, "label": label, "label_name": names[label], "imu": imu,
                         "split": split})  # fmt: skip
        paths[split] = write_manifest(rows, out / f"{split}.parquet")
    paths["classnames"] = write_class_names(names, out / "classnames.csv")
    return paths

