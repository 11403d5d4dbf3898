"""The project IMU file format and the alignment of IMU samples to sampled video frames."""

from __future__ import annotations

import numpy as np
import pytest

# isort: split
from vidablate.data.imu import (
    ImuFormatError,
    ImuStream,
    imu_for_frames,
    read_imu,
    write_imu,
)
from vidablate.data.synthetic import SyntheticSpec, generate_split

HEADER = "t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"


def _stream(n: int = 50, rate: float = 100.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = (np.arange(n) + 0.5) / rate
    return t, rng.standard_normal((n, 6)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_write_read_round_trip_is_exact(tmp_path, suffix):
    t, values = _stream()
    path = write_imu(tmp_path / f"clip{suffix}", t, values)
    stream = read_imu(path)
    assert stream.t.dtype == np.float64 and stream.values.dtype == np.float32
    np.testing.assert_array_equal(stream.t, t)
    np.testing.assert_array_equal(stream.values, values)
    if suffix == ".csv":
        assert path.read_text().splitlines()[0] == HEADER


def test_rate_and_duration_count_one_period_per_sample():
    t, values = _stream(n=40, rate=20.0)
    stream = ImuStream(t=t, values=values)
    assert stream.rate_hz == pytest.approx(20.0)
    assert stream.duration == pytest.approx(2.0)  # 40 samples at 20 Hz
    assert stream.start == pytest.approx(0.0) and stream.end == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("t,ax,ay,az,gx,gy,gz\n0,0,0,0,0,0,0\n", "line 1"),
        (f"{HEADER}\n0,0,0,0,0,0,0\n0.1,0,0,0,0,0\n", "line 3: 6 columns"),
        (f"{HEADER}\n0,0,0,0,0,0,0\n0.1,0,0,x,0,0,0\n", "line 3: column 'acc_z'"),
        (f"{HEADER}\n0,0,0,0,0,0,0\n0.2,0,0,0,0,0,0\n0.1,0,0,0,0,0,0\n", "line 4: column 't'"),
        (f"{HEADER}\n0,0,0,0,0,0,0\n0.1,0,0,0,0,nan,0\n", "line 3: column 'gyro_y'"),
        (f"{HEADER}\n", "no samples"),
    ],
)
def test_read_errors_name_the_file_and_line(tmp_path, body, expect):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ImuFormatError) as err:
        read_imu(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_npy_shape_and_missing_file_errors(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((5, 6)))
    with pytest.raises(ImuFormatError, match=r"bad\.npy: array shape \(5, 6\)"):
        read_imu(tmp_path / "bad.npy")
    with pytest.raises(ImuFormatError, match="missing.csv: file not found"):
        read_imu(tmp_path / "missing.csv")


def test_samples_sit_at_sub_interval_centres_of_each_frame():
    # A linear signal is interpolated exactly, so the values reveal the query times.
    t = np.linspace(0.0, 10.0, 101)
    values = np.stack([t, 2 * t, -t, t + 1, 0 * t, 3 * t], axis=1).astype(np.float32)
    stream = ImuStream(t=t, values=values)
    fps, spf = 4.0, 2
    out = imu_for_frames(stream, np.array([0.0, 1.0, 2.5]), fps, spf)
    expected_times = np.array([0.0, 1.0, 2.5])[:, None] + (np.arange(spf) + 0.5) / (spf * fps)
    assert out.shape == (6, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected_times.reshape(-1), atol=1e-6)
    np.testing.assert_allclose(out[1], 2 * expected_times.reshape(-1), atol=1e-6)


def test_outside_the_stream_holds_the_edge_values():
    stream = ImuStream(t=np.array([1.0, 2.0]), values=np.array([[1] * 6, [3] * 6], np.float32))
    out = imu_for_frames(stream, np.array([0.0, 1.25, 5.0]), fps=4.0, samples_per_frame=1)
    np.testing.assert_allclose(out[0], [1.0, 1.75, 3.0])  # samples at 0.125, 1.375, 5.125 s


def test_reproduces_the_synthetic_imu_and_its_frame_subsets(tmp_path):
    spec = SyntheticSpec(num_classes=2, train_per_class=2, test_per_class=1, num_frames=8)
    data = generate_split(spec, "test")
    fps, r, T = 8.0, spec.imu_rate, spec.num_frames
    t = (np.arange(T * r) + 0.5) / (r * fps)  # export_synthetic's timestamps
    for i, clip in enumerate(data["imu"]):
        stream = read_imu(write_imu(tmp_path / f"{i}.csv", t, clip.T))
        np.testing.assert_allclose(imu_for_frames(stream, np.arange(T) / fps, fps, r), clip,
                                   rtol=0, atol=1e-6)  # fmt: skip
        idx = np.array([1, 4, 6])  # a sampled subset: the rows of exactly those frames
        sub = imu_for_frames(stream, idx / fps, fps, r)
        np.testing.assert_allclose(sub, clip.reshape(6, T, r)[:, idx].reshape(6, -1), atol=1e-6)
