"""The project IMU file format and its alignment to sampled video frames.

A clip's IMU lives in one file next to its video: a CSV with the header
``t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z`` (or a ``.npy`` float array [n, 7] in the same
column order). ``t`` is in seconds from the start of the clip's video file, the accelerometer
is in g and the gyroscope in rad/s: the units of the synthetic generator
(``vidablate.data.synthetic``), so a model trained on the embedded default sees real data on
the same scale. Converters from dataset-specific sensor files live in
``vidablate.data.converters``.

Alignment convention (shared with ``converters.export_synthetic``): frame i with start time
``frame_times[i]`` covers [frame_times[i], frame_times[i] + 1/fps); its ``samples_per_frame``
IMU samples sit at the centres of equal sub-intervals, frame_times[i] + (k + 0.5) /
(samples_per_frame * fps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMU_COLUMNS: tuple[str, ...] = ("t", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
_HEADER = ",".join(IMU_COLUMNS)


class ImuFormatError(ValueError):
    """An IMU file is missing or malformed; the message names the file and the line/column."""


@dataclass
class ImuStream:
    """One clip's IMU: ``t`` float64 [n] seconds (strictly increasing), ``values`` float32
    [n, 6] (acc xyz in g, gyro xyz in rad/s)."""

    t: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    @property
    def rate_hz(self) -> float:
        """Median sample rate; nan for fewer than two samples."""
        if len(self.t) < 2:
            return math.nan
        return float(1.0 / np.median(np.diff(self.t)))

    @property
    def duration(self) -> float:
        """Seconds covered, counting one sample period per sample: (t[-1] - t[0]) + 1/rate.

        So n samples at rate r cover n / r seconds, the same span as the frames they belong to
        (an exported synthetic clip of T frames at fps has duration T / fps). 0 for < 2 samples.
        """
        if len(self.t) < 2:
            return 0.0
        return float(self.t[-1] - self.t[0]) + 1.0 / self.rate_hz

    @property
    def start(self) -> float:
        """Start of the covered span: the first sample minus half a sample period."""
        return float(self.t[0]) - (0.5 / self.rate_hz if len(self.t) > 1 else 0.0)

    @property
    def end(self) -> float:
        """End of the covered span: ``start + duration``."""
        return self.start + self.duration


def _check(t: np.ndarray, values: np.ndarray, where: str) -> None:
    """Raise ImuFormatError unless t is finite and strictly increasing and values finite."""
    if len(t) == 0:
        raise ImuFormatError(f"{where}: no samples")
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ImuFormatError(f"{where}: row {bad[0]}: column 't' is not finite")
    bad_rows, bad_cols = np.nonzero(~np.isfinite(values))
    if bad_rows.size:
        col = IMU_COLUMNS[1 + bad_cols[0]]
        raise ImuFormatError(f"{where}: row {bad_rows[0]}: column {col!r} is not finite")
    step = np.diff(t)
    bad = np.flatnonzero(step <= 0)
    if bad.size:
        i = bad[0] + 1
        raise ImuFormatError(
            f"{where}: row {i}: column 't' is not increasing ({t[i - 1]!r} then {t[i]!r})"
        )


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the CSV format; on a bad line report its 1-based line number."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImuFormatError(f"{path}: cannot read: {exc}") from exc
    lines = text.splitlines()
    if not lines:
        raise ImuFormatError(f"{path}: line 1: empty file (expected header {_HEADER!r})")
    header = [c.strip() for c in lines[0].split(",")]
    if header != list(IMU_COLUMNS):
        raise ImuFormatError(f"{path}: line 1: header {lines[0]!r}, expected {_HEADER!r}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != len(IMU_COLUMNS):
            raise ImuFormatError(
                f"{path}: line {lineno}: {len(fields)} columns, expected {len(IMU_COLUMNS)}"
            )
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            col = next(c for c, f in zip(IMU_COLUMNS, fields, strict=True) if not _is_float(f))
            raise ImuFormatError(
                f"{path}: line {lineno}: column {col!r} is not a number: {line!r}"
            ) from None
    if not rows:
        raise ImuFormatError(f"{path}: no samples after the header")
    data = np.asarray(rows, dtype=np.float64)
    t, values = data[:, 0], data[:, 1:]
    try:
        _check(t, values, str(path))
    except ImuFormatError as exc:  # report CSV line numbers (data row r is on line r + 2)
        msg = str(exc)
        prefix = f"{path}: row "
        if msg.startswith(prefix):
            row, rest = msg[len(prefix) :].split(":", 1)
            raise ImuFormatError(f"{path}: line {_line_of(lines, int(row))}:{rest}") from None
        raise
    return t, values.astype(np.float32)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _line_of(lines: list[str], row: int) -> int:
    """1-based line number of data row ``row`` (blank lines after the header are skipped)."""
    seen = -1
    for lineno, line in enumerate(lines[1:], start=2):
        if line.strip():
            seen += 1
            if seen == row:
                return lineno
    return len(lines)


def read_imu(path: str | Path) -> ImuStream:
    """Read a project IMU file (``.csv`` or ``.npy``); checks 7 columns, finite values and a
    strictly increasing ``t``. Errors name the file and the line (CSV) or row (npy)."""
    path = Path(path)
    if not path.is_file():
        raise ImuFormatError(f"{path}: file not found")
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ImuFormatError(f"{path}: not a readable .npy array: {exc}") from exc
        if data.ndim != 2 or data.shape[1] != len(IMU_COLUMNS):
            raise ImuFormatError(
                f"{path}: array shape {tuple(data.shape)}, expected [n, {len(IMU_COLUMNS)}] "
                f"with columns {_HEADER}"
            )
        if data.dtype.kind not in "fiu":
            raise ImuFormatError(f"{path}: dtype {data.dtype}, expected a float array")
        t, values = data[:, 0].astype(np.float64), data[:, 1:].astype(np.float32)
        _check(t, values, str(path))
        return ImuStream(t=t, values=values)
    t, values = _read_csv(path)
    return ImuStream(t=t, values=values)


def write_imu(path: str | Path, t: np.ndarray, values: np.ndarray) -> Path:
    """Write an IMU file (format from the suffix: ``.npy``, else CSV). ``values`` is [n, 6]
    (acc xyz in g, gyro xyz in rad/s); ``t`` [n] seconds, strictly increasing. Floats are
    written with enough digits to read back bit-exact (float64 t, float32 values)."""
    path = Path(path)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape != (len(t), 6):
        raise ValueError(f"{path}: values must be [n, 6] with n = len(t) = {len(t)}, "
                         f"got {tuple(values.shape)}")  # fmt: skip
    _check(t, values, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        data = np.concatenate([t[:, None], values.astype(np.float64)], axis=1)
        np.save(path, data)
        return path
    lines = [_HEADER]
    for ti, row in zip(t.tolist(), values.tolist(), strict=True):
        lines.append(",".join([repr(ti)] + [f"{v:.9g}" for v in row]))
    path.write_text("\n".join(lines) + "\n")
    return path


def frame_sample_times(frame_times: np.ndarray, fps: float, samples_per_frame: int) -> np.ndarray:
    """Times [T * samples_per_frame] of the IMU samples of frames starting at ``frame_times``."""
    frame_times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    k = (np.arange(samples_per_frame, dtype=np.float64) + 0.5) / (samples_per_frame * fps)
    return (frame_times[:, None] + k[None, :]).reshape(-1)


def imu_for_frames(
    stream: ImuStream, frame_times: np.ndarray, fps: float, samples_per_frame: int
) -> np.ndarray:
    """IMU of the sampled frames: float32 [6, T * samples_per_frame].

    Frame i covers [frame_times[i], frame_times[i] + 1/fps) (frame_times[i] = index / fps for
    a frame index); its ``samples_per_frame`` samples are read at frame_times[i] + (k + 0.5) /
    (samples_per_frame * fps) by linear interpolation per channel, holding the edge values
    outside the stream. For an exported synthetic clip with frame_times = arange(T) / fps and
    samples_per_frame = spec.imu_rate this returns the generator's IMU array.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if samples_per_frame < 1:
        raise ValueError(f"samples_per_frame must be >= 1, got {samples_per_frame}")
    times = frame_sample_times(frame_times, fps, samples_per_frame)
    out = np.empty((6, len(times)), dtype=np.float32)
    for c in range(6):
        out[c] = np.interp(times, stream.t, stream.values[:, c].astype(np.float64))
    return out


def imu_for_span(stream: ImuStream, start: float, end: float, samples: int) -> np.ndarray:
    """IMU of the time span [start, end) seconds resampled to ``samples`` points: float32
    [6, samples] at the centres of ``samples`` equal sub-intervals, by linear interpolation per
    channel, holding the edge values outside the stream.

    This is the IS-CLIP input of "the same time period" as the clip (isclip §II-B): the span
    the sampled clip covers, not only the instants of its T frames, at the encoder's fixed
    length. For an exported synthetic clip, the whole video's span and ``T * imu_rate`` samples
    give back the generator's IMU array."""
    if not end > start:
        raise ValueError(f"the IMU span must have end > start, got [{start}, {end})")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    times = start + (np.arange(samples, dtype=np.float64) + 0.5) * ((end - start) / samples)
    out = np.empty((6, samples), dtype=np.float32)
    for c in range(6):
        out[c] = np.interp(times, stream.t, stream.values[:, c].astype(np.float64))
    return out
