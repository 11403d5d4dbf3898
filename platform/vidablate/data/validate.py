"""Pre-training checks of a dataset manifest (``vidablate.data.manifest``): ``validate_manifest``
checks every row (files exist and decode, labels against the class names, IMU files and their
length, time spans) on a thread pool and returns a ``ValidationReport`` with every problem at
once, grouped by kind (``PROBLEM_KINDS``). ``vidablate.data.preflight`` runs it for every
manifest of a sweep, ``jobs/prepare_data.py validate`` from the command line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .frames import open_clip_source
from .imu import ImuFormatError, ImuStream, read_imu
from .manifest import ManifestError, _names, _normalise, read_manifest, resolve_video
from .video import VideoDecodeError

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
                    raise VideoDecodeError(vpath, "no frames")
                frames = src.get([0, n - 1])
                if len(frames) != 2:
                    raise VideoDecodeError(vpath, f"decoded {len(frames)} of 2 frames")
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
