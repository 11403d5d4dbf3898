"""Dataset manifests: one Parquet file per split listing the clips of a real dataset, and the
class-name file that goes with them. This module holds the schema and the file I/O.

Columns (``MANIFEST_SCHEMA``): ``video`` (path of a video file or of a folder of frame
images), ``label`` (0-based class id), ``label_name``; optional ``imu`` (path of the clip's IMU
file in the project format, ``vidablate.data.imu``), ``start``/``end`` (seconds: the clip's
span inside a longer video; null = the whole video) and ``split``. Relative paths resolve
against a root: ``data.video_root``, or the manifest's own folder when that is empty, so
``rebase_paths`` (applied by ``prepare_data`` before writing) stores paths relative to the
manifest's folder when they lie under it and absolute otherwise. The class-id -> name file
(``read_class_names``, ``write_class_names``) belongs with the manifests: the text side builds
its prompts from it.

Here: the schema and extension constants, ``ManifestError``, ``write_manifest``/
``read_manifest`` (both check a table with ``_normalise``), ``manifest_records``,
``resolve_video``, ``rebase_paths`` and the class-name files. Next to it:
``vidablate.data.converters`` (the papers' list formats, UESTC-MMEA-CL and the synthetic
export -> manifests), ``vidablate.data.validate`` (``validate_manifest``: every row checked
before training) and ``vidablate.data.frames`` (clips stored as folders of frame images).
``jobs/prepare_data.py`` is the command line.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError

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
