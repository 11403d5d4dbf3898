"""Dataset manifests: one Parquet file per split listing the clips of a real dataset.

Columns (``MANIFEST_SCHEMA``): ``video`` (path of a video file or of a folder of frame
images), ``label`` (0-based class id), ``label_name``; optional ``imu`` (path of the clip's IMU
file in the project format, ``vidablate.data.imu``), ``start``/``end`` (seconds: the clip's
span inside a longer video; null = the whole video) and ``split``. Relative paths resolve
against a root: ``data.video_root``, or the manifest's own folder when that is empty, so the
converters' ``rebase_paths`` stores paths relative to the manifest's folder when they lie under
it and absolute otherwise. The class-id -> name file (``read_class_names``) belongs with the
manifests: the text side builds its prompts from it.

Converters turn the list formats of the papers' code bases into manifests (X-CLIP/ViFi-CLIP
``path label`` lists, TSN ``path num_frames label``, PySlowFast csv, a class-per-folder tree,
UESTC-MMEA-CL) and ``export_synthetic`` writes the embedded synthetic dataset as real files.
``validate_manifest`` checks every row (files exist and decode, labels, IMU, time spans) before
any training and reports every problem at once. ``jobs/prepare_data.py`` is the command line.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError
from .imu import ImuFormatError, ImuStream, read_imu, write_imu

if TYPE_CHECKING:  # .video imports torch; loaded on first use so the CLI starts fast
    from .video import VideoFile


def _decode_error(path: Path, reason: str) -> Exception:
    from .video import VideoDecodeError

    return VideoDecodeError(path, reason)

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("video", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("label_name", pa.string(), nullable=False),
        pa.field("imu", pa.string()),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("split", pa.string()),
    ]
)
REQUIRED_COLUMNS: tuple[str, ...] = ("video", "label", "label_name")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")

# Problem kinds of ``validate_manifest``, in report order.
PROBLEM_KINDS: tuple[str, ...] = (
    "missing video",
    "unreadable video",
    "unknown label",
    "missing imu",
    "unreadable imu",
    "imu/video length mismatch",
    "bad time span",
)


class ManifestError(ConfigError):
    """A manifest, list or class-name file is invalid; the message names the file and the
    column, field or line."""


# ------------------------------------------------------------------------ manifest files


def _column_array(values: list[Any], name: str, source: str) -> pa.Array:
    """One column of records as an Arrow array (types inferred; cast later)."""
    values = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ManifestError(f"{source}: column {name!r}: mixed or unsupported values: {exc}") from exc


def _table_from_records(records: Iterable[dict[str, Any]], source: str) -> pa.Table:
    """Records (dicts) -> Arrow table with the union of their keys as columns."""
    records = list(records)
    keys: dict[str, None] = {}
    for rec in records:
        keys.update(dict.fromkeys(rec))
    return pa.table({k: _column_array([r.get(k) for r in records], k, source) for k in keys})


def _normalise(table: pa.Table, source: str) -> pa.Table:
    """Check required columns, cast known columns to ``MANIFEST_SCHEMA`` (extra columns pass
    through), and reject nulls/empty paths in required columns and negative labels."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(
            f"{source}: missing required column(s) {', '.join(map(repr, missing))} "
            f"(a manifest needs {', '.join(REQUIRED_COLUMNS)})"
        )
    known = {f.name for f in MANIFEST_SCHEMA}
    columns, fields = [], []
    for f in MANIFEST_SCHEMA:
        if f.name not in table.column_names:
            continue
        col = table.column(f.name)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise ManifestError(
                    f"{source}: column {f.name!r}: cannot read {col.type} as {f.type}: {exc}"
                ) from exc
        if f.name in REQUIRED_COLUMNS and col.null_count:
            rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
            raise ManifestError(
                f"{source}: column {f.name!r}: {len(rows)} null value(s), first in row {rows[0]}"
            )
        columns.append(col)
        fields.append(pa.field(f.name, f.type, nullable=f.nullable))
    extra = [c for c in table.column_names if c not in known]
    columns += [table.column(c) for c in extra]
    fields += [table.schema.field(c) for c in extra]
    out = pa.table(columns, schema=pa.schema(fields))
    labels = out.column("label").to_numpy()
    neg = np.flatnonzero(labels < 0)
    if neg.size:
        raise ManifestError(
            f"{source}: column 'label': negative label {labels[neg[0]]} in row {neg[0]} "
            f"({neg.size} negative)"
        )
    videos = out.column("video").to_pylist()
    empty = [i for i, v in enumerate(videos) if not v.strip()]
    if empty:
        raise ManifestError(f"{source}: column 'video': empty path in row {empty[0]}")
    return out


def write_manifest(records: list[dict[str, Any]] | pa.Table, path: str | Path) -> Path:
    """Write a manifest (records or a table) as Parquet after the same checks as
    ``read_manifest``, so an invalid manifest is never written. Returns the path."""
    path = Path(path)
    if isinstance(records, pa.Table):
        table = records
    else:
        records = list(records)
        if not records:
            raise ManifestError(f"{path}: no records to write")
        table = _table_from_records(records, str(path))
    table = _normalise(table, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_manifest(path: str | Path) -> pa.Table:
    """Read a manifest: required columns present, types castable to ``MANIFEST_SCHEMA``, no
    nulls in required columns, labels >= 0. Errors name the file and the column."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{path}: not a readable Parquet file: {exc}") from exc
    return _normalise(table, str(path))


def manifest_records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of a manifest table as dicts (column -> value; nulls are None)."""
    return table.to_pylist()


def resolve_video(path: str, root: str | Path | None) -> Path:
    """A manifest path as a filesystem path: absolute stays, relative joins ``root``."""
    p = Path(path).expanduser()
    if p.is_absolute() or root is None:
        return p
    return Path(root) / p


def _under(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def rebase_paths(table: pa.Table, root: str | Path | None, manifest_dir: str | Path) -> pa.Table:
    """Re-express ``video``/``imu`` paths (relative ones resolved against ``root``) relative to
    ``manifest_dir`` when they lie under it and absolute otherwise, so the manifest resolves
    with the default root (its own folder) wherever it is read from."""
    base = Path(os.path.abspath(manifest_dir))
    root = Path(os.path.abspath(root)) if root is not None else Path.cwd()

    def rebase(value: str | None) -> str | None:
        if value is None:
            return None
        full = Path(os.path.abspath(resolve_video(value, root)))
        return full.relative_to(base).as_posix() if _under(full, base) else str(full)

    for name in ("video", "imu"):
        if name in table.column_names:
            idx = table.column_names.index(name)
            values = [rebase(v) for v in table.column(name).to_pylist()]
            table = table.set_column(idx, name, pa.array(values, type=pa.string()))
    return table


# --------------------------------------------------------------------- class-name files

_ID_NAME = re.compile(r"^\s*(-?\d+)\s*[,\s]\s*(\S.*?)\s*$")


def _read_lines(path: Path, what: str, encoding: str = "utf-8",
                error: type[Exception] = ManifestError) -> list[str]:
    """The lines of a text input file; an unreadable one raises ``error`` naming the file."""
    try:
        return path.read_text(encoding=encoding).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc


def _list_fields(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of a list file, blank and ``#`` lines
    skipped."""
    out = []
    for lineno, raw in enumerate(_read_lines(path, "list file"), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((lineno, line.split()))
    return out


def read_class_names(path: str | Path) -> list[str]:
    """Class names in id order from (a) a csv with header ``id,name`` (X-CLIP's label files),
    (b) a txt with one name per line (id = 0-based line number) or (c) a txt of ``id name``
    lines. Ids must be exactly 0..C-1 and names unique; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: class-name file not found")
    lines = _read_lines(path, "class-name file", encoding="utf-8-sig")
    while lines and not lines[-1].strip():
        lines.pop()
    if not any(line.strip() for line in lines):
        raise ManifestError(f"{path}: empty class-name file")
    first = next(i for i, line in enumerate(lines) if line.strip())
    header = [c.strip().lower() for c in next(csv.reader([lines[first]]))]
    entries: list[tuple[int, int, str]] = []  # (line number, id, name)
    if header[:2] == ["id", "name"]:  # (a) csv
        for lineno, line in enumerate(lines[first + 1 :], start=first + 2):
            if not line.strip():
                continue
            row = next(csv.reader([line]))
            if len(row) < 2:
                raise ManifestError(f"{path}: line {lineno}: expected 'id,name', got {line!r}")
            entries.append((lineno, _class_id(row[0], path, lineno), ",".join(row[1:]).strip()))
    elif all(_ID_NAME.match(line) for line in lines if line.strip()):  # (c) id name
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                m = _ID_NAME.match(line)
                entries.append((lineno, int(m.group(1)), m.group(2)))
    else:  # (b) one name per line
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                raise ManifestError(
                    f"{path}: line {lineno}: blank line in a one-name-per-line file "
                    "(the line number is the class id)"
                )
            entries.append((lineno, lineno - 1, line.strip()))
    return _check_class_entries(entries, path)


def _class_id(text: str, path: Path, lineno: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ManifestError(f"{path}: line {lineno}: id {text!r} is not an integer") from None


def _check_class_entries(entries: list[tuple[int, int, str]], path: Path) -> list[str]:
    """Ids exactly 0..C-1 (any order), names non-empty and unique -> names in id order."""
    count = len(entries)
    by_id: dict[int, tuple[int, str]] = {}
    by_name: dict[str, int] = {}
    for lineno, cid, name in entries:
        if not name:
            raise ManifestError(f"{path}: line {lineno}: empty class name")
        if not 0 <= cid < count:
            hint = " (1-based ids, e.g. UCF101's classInd.txt, need renumbering)" if cid == count else ""
            raise ManifestError(
                f"{path}: line {lineno}: id {cid} outside 0..{count - 1} ({count} classes){hint}"
            )
        if cid in by_id:
            raise ManifestError(f"{path}: line {lineno}: duplicate id {cid} (line {by_id[cid][0]})")
        if name in by_name:
            raise ManifestError(
                f"{path}: line {lineno}: duplicate class name {name!r} (line {by_name[name]})"
            )
        by_id[cid] = (lineno, name)
        by_name[name] = lineno
    return [by_id[i][1] for i in range(count)]


def write_class_names(names: Sequence[str], path: str | Path) -> Path:
    """Write class names as an ``id,name`` csv (format (a) of ``read_class_names``)."""
    path = Path(path)
    names = list(names)
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise ManifestError(f"{path}: class names must be non-empty and unique")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "name"])
        writer.writerows(enumerate(names))
    return path


def _names(class_names: Sequence[str] | str | Path) -> list[str]:
    """A list of class names, or the names read from a class-name file."""
    if isinstance(class_names, str | os.PathLike):
        return read_class_names(class_names)
    names = list(class_names)
    if not names:
        raise ManifestError("class_names: empty list of class names")
    return names


# ------------------------------------------------------------------------- converters


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


# ----------------------------------------------------------------- frame folders, sources


def _natural_key(path: Path) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]


class FrameFolder:
    """A clip stored as a folder of frame images (jpg/png; natural name order) behind the
    ``VideoFile`` API: ``num_frames``, ``fps`` (a knob: the folder does not record it),
    ``get(indices)`` -> uint8 [n, H, W, 3], ``close()``, context manager. Unreadable images
    raise ``VideoDecodeError``."""

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        self.path = Path(path)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        if not self.path.is_dir():
            raise _decode_error(self.path, "not a folder of frames")
        self._files = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
            key=_natural_key,
        )
        if not self._files:
            raise _decode_error(self.path, f"no frame images ({', '.join(IMAGE_EXTENSIONS)})")

    @property
    def num_frames(self) -> int:
        return len(self._files)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (repeats allowed) as uint8 [n, H, W, 3]."""
        from PIL import Image

        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        bad = [i for i in idx if not 0 <= i < len(self._files)]
        if bad:
            raise IndexError(f"{self.path}: frame index {bad[0]} outside 0..{len(self._files) - 1}")
        cache: dict[int, np.ndarray] = {}
        for i in dict.fromkeys(idx or [0]):  # frame 0 gives the size of an empty request
            try:
                with Image.open(self._files[i]) as im:
                    cache[i] = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except (OSError, ValueError) as exc:
                raise _decode_error(self.path, f"{self._files[i].name}: {exc}") from exc
        shapes = {a.shape for a in cache.values()}
        if len(shapes) > 1:
            raise _decode_error(self.path, f"frames differ in size: {sorted(shapes)}")
        if not idx:
            return np.zeros((0, *cache[0].shape), dtype=np.uint8)
        return np.stack([cache[i] for i in idx])

    def close(self) -> None:
        """Nothing to release (images are opened per read)."""

    def __enter__(self) -> FrameFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_clip_source(
    path: str | Path, backend: str = "auto", fps: float = 30.0
) -> FrameFolder | VideoFile:
    """A clip's frames: ``FrameFolder`` (at ``fps``) for a folder, else ``VideoFile``."""
    from .video import VideoFile

    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, fps=fps)
    return VideoFile(path, backend=backend)


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


# -------------------------------------------------------------------------- validation


@dataclass
class ValidationReport:
    """Every problem found in a manifest: kind (``PROBLEM_KINDS``) -> one message per
    offending row, "row <i>: <path>: <what>" (rows 0-based, as in the Parquet table)."""

    source: str
    checked: int
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    @property
    def count(self) -> int:
        """Number of problems (a row can have several)."""
        return sum(len(v) for v in self.problems.values())

    def summary(self, examples: int = 5) -> str:
        """One line: the file, the problem count and, per kind, its count and examples."""
        if self.ok:
            return f"{self.source}: no problems in {self.checked} rows"
        parts = []
        for kind, msgs in self.problems.items():
            if not msgs:
                continue
            shown = ", ".join(msgs[:examples])
            if len(msgs) > examples:
                shown += f", ... {len(msgs) - examples} more"
            parts.append(f"{kind}: {len(msgs)} ({shown})")
        return f"{self.source}: {self.count} problem(s) in {self.checked} rows: " + "; ".join(parts)

    def raise_for_problems(self) -> None:
        """Raise ``ManifestError`` with the summary when there is any problem."""
        if not self.ok:
            raise ManifestError(self.summary())


def _number(value: Any) -> float | None:
    """A start/end cell as a float, None for null/NaN."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


def _check_row(
    rec: dict[str, Any],
    root: Path,
    *,
    decode: bool,
    check_imu: bool,
    require_imu: bool,
    has_imu_col: bool,
    tolerance: float,
    backend: str,
    fps: float,
) -> list[tuple[str, str]]:
    """The file checks of one row -> [(kind, message without the row prefix)]."""
    out: list[tuple[str, str]] = []
    vpath = resolve_video(rec["video"], root)
    duration = frame_period = None
    if not vpath.exists():
        out.append(("missing video", f"{vpath}: file not found"))
    elif decode:
        try:
            with open_clip_source(vpath, backend=backend, fps=fps) as src:
                n, rate = int(src.num_frames), float(src.fps)
                if n < 1:
                    raise _decode_error(vpath, "no frames")
                frames = src.get([0, n - 1])
                if len(frames) != 2:
                    raise _decode_error(vpath, f"decoded {len(frames)} of 2 frames")
            duration, frame_period = n / rate, 1.0 / rate
        except Exception as exc:  # any decoder failure is a finding here, not a crash
            out.append(("unreadable video", f"{vpath}: {_reason(exc)}"))

    start, end = _number(rec.get("start")), _number(rec.get("end"))
    window: tuple[float, float] | None = (0.0, duration) if duration is not None else None
    explicit = start is not None or end is not None
    if explicit:
        s = 0.0 if start is None else start
        e = duration if end is None else end
        span = f"[{start}, {end}] s"
        what = None
        if any(v is not None and not math.isfinite(v) for v in (start, end)):
            what = f"time span {span} is not finite"
        elif any(v is not None and v < 0 for v in (start, end)):
            what = f"negative time in span {span}"
        elif e is not None and s >= e:
            what = f"start >= end in span {span}"
        elif end is not None and duration is not None and end > duration + frame_period + 1e-9:
            what = f"end {end:.3f} s beyond the video's {duration:.3f} s (+1 frame)"
        if what:
            out.append(("bad time span", f"{vpath}: {what}"))
            window = None
        else:
            window = (s, e) if e is not None else None

    if check_imu:
        ipath_text = rec.get("imu") if has_imu_col else None
        if not has_imu_col:
            out.append(("missing imu", f"{vpath}: the manifest has no imu column"))
        elif not ipath_text:
            if require_imu:
                out.append(("missing imu", f"{vpath}: no imu path"))
        else:
            ipath = resolve_video(ipath_text, root)
            if not ipath.is_file():
                out.append(("missing imu", f"{ipath}: file not found"))
            else:
                try:
                    stream = read_imu(ipath)
                except ImuFormatError as exc:
                    out.append(("unreadable imu", str(exc)))
                else:
                    if window is not None:
                        out += _imu_length(stream, ipath, window, explicit, tolerance)
    return out


def _imu_length(
    stream: ImuStream, ipath: Path, window: tuple[float, float], explicit: bool, tol: float
) -> list[tuple[str, str]]:
    """Whole video: IMU duration within ``tol`` of the video's. Explicit span: the IMU (timed
    from the video start) covers the span to within ``tol`` at both ends."""
    s, e = window
    if not explicit:
        if abs(stream.duration - (e - s)) > tol:
            return [("imu/video length mismatch",
                     f"{ipath}: IMU covers {stream.duration:.3f} s, the video {e - s:.3f} s")]  # fmt: skip
    elif stream.start > s + tol or stream.end < e - tol:
        return [("imu/video length mismatch",
                 f"{ipath}: IMU covers [{stream.start:.3f}, {stream.end:.3f}] s, "
                 f"the clip [{s:.3f}, {e:.3f}] s")]  # fmt: skip
    return []


def validate_manifest(
    manifest: str | Path | pa.Table,
    *,
    root: str | Path | None = None,
    class_names: Sequence[str] | str | Path | None = None,
    num_classes: int | None = None,
    decode: bool = True,
    imu: bool | None = None,
    imu_tolerance_s: float = 0.5,
    backend: str = "auto",
    workers: int = 4,
    fps: float = 30.0,
) -> ValidationReport:
    """Check every row before training and report every problem at once (``PROBLEM_KINDS``).

    Relative paths resolve against ``root`` (default: the manifest's folder; the working
    directory for a table). Labels: below the class count (``class_names`` or
    ``num_classes``) and ``label_name`` equal to ``class_names[label]``; without names, one
    name per label. ``decode``: open each video (``backend``; frame folders at ``fps``) and
    decode its first and last frame; without it only existence is checked, and the checks
    that need the video's duration (IMU length, end past the video) are skipped. ``imu``:
    None checks rows with an imu path when the column exists, True requires one per row,
    False skips IMU. IMU length: the whole-video IMU duration within ``imu_tolerance_s`` of
    the video's, or for a start/end span the IMU covering it to within the tolerance. File
    checks run on a pool of ``workers`` threads. Schema problems raise ``ManifestError``.
    """
    if isinstance(manifest, pa.Table):
        source, table, base = "<table>", _normalise(manifest, "<table>"), Path.cwd()
    else:
        source = str(manifest)
        table, base = read_manifest(manifest), Path(manifest).parent
    root_path = Path(root) if root is not None else base
    names = _names(class_names) if class_names is not None else None
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise ManifestError(f"{source}: {len(names)} class names but num_classes={num_classes}")
    num = len(names) if names is not None else num_classes
    records = table.to_pylist()
    found: list[list[tuple[str, str]]] = [[] for _ in records]

    seen: dict[int, tuple[int, str]] = {}
    for i, rec in enumerate(records):
        label, name = rec["label"], rec["label_name"]
        if num is not None and label >= num:
            found[i].append(("unknown label", f"{rec['video']}: label {label} >= {num} classes"))
        elif names is not None and name != names[label]:
            found[i].append(("unknown label", f"{rec['video']}: label_name {name!r} but class "
                                              f"{label} is {names[label]!r}"))  # fmt: skip
        elif names is None:
            first = seen.setdefault(label, (i, name))
            if first[1] != name:
                found[i].append(("unknown label", f"{rec['video']}: label {label} named {name!r} "
                                                  f"but {first[1]!r} in row {first[0]}"))  # fmt: skip

    has_imu_col = "imu" in table.column_names
    check_imu = has_imu_col if imu is None else bool(imu)

    def check(rec: dict[str, Any]) -> list[tuple[str, str]]:
        return _check_row(rec, root_path, decode=decode, check_imu=check_imu,
                          require_imu=imu is True, has_imu_col=has_imu_col,
                          tolerance=imu_tolerance_s, backend=backend, fps=fps)  # fmt: skip

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, row_problems in enumerate(pool.map(check, records)):
            found[i] += row_problems

    problems: dict[str, list[str]] = {}
    for kind in PROBLEM_KINDS:
        msgs = [f"row {i}: {msg}" for i, row in enumerate(found) for k, msg in row if k == kind]
        if msgs:
            problems[kind] = msgs
    return ValidationReport(source=source, checked=len(records), problems=problems)
