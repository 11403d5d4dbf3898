"""IMU of "the same time period" (isclip §II-B) on real recorded sensor data: BasicMotions, a
smartwatch's 3-axis accelerometer and gyroscope at 10 Hz for 10 s per recording, four activities
(standing, walking, running, badminton), as sktime ships it. Each recording becomes a manifest
row (a 10 s, 30 fps video and the IMU file); the manifest path must hand the model the same
arrays as resampling the recording directly, so an IMU-only classifier scores the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vidablate.data.clips import ClipSampling, ManifestClips
from vidablate.data.imu import write_imu
from vidablate.data.manifest import manifest_records, read_manifest, write_manifest
from vidablate.data.video import write_video
from vidablate.modules.isclip import IMUBranch

pytestmark = pytest.mark.usefixtures("one_thread")

RATE_HZ, SECONDS, FPS, T, SAMPLES_PER_FRAME = 10.0, 10.0, 30.0, 8, 16


@pytest.fixture(scope="module")
def basic_motions(tmp_path_factory):
    """(arrays per split [n, 6, 100], labels per split, manifest path per split)."""
    datasets = pytest.importorskip("sktime.datasets")
    root = tmp_path_factory.mktemp("basic_motions")
    video = write_video(root / "video.mp4", np.full((int(SECONDS * FPS), 32, 32, 3), 128,
                                                    dtype=np.uint8), fps=FPS)
    out = {}
    for split in ("train", "test"):
        x, y = datasets.load_basic_motions(split=split, return_type="numpy3d")
        names = sorted(set(y))
        labels = np.array([names.index(v) for v in y])
        t = (np.arange(x.shape[2]) + 0.5) / RATE_HZ
        rows = []
        for i, series in enumerate(x):
            path = write_imu(root / split / f"{i:03d}.csv", t, series.T.astype(np.float32))
            rows.append({"video": video.name, "label": int(labels[i]),
                         "label_name": names[labels[i]], "imu": str(path.relative_to(root))})
        out[split] = (x.astype(np.float32), labels, write_manifest(rows, root / f"{split}.parquet"))
    return out


def _direct(x: np.ndarray) -> np.ndarray:
    """The recordings resampled over their whole 10 s to T x r points at bin centres."""
    n = T * SAMPLES_PER_FRAME
    source = (np.arange(x.shape[-1]) + 0.5) / RATE_HZ
    times = (np.arange(n) + 0.5) * SECONDS / n
    return np.stack([[np.interp(times, source, ch) for ch in series] for series in x]
                    ).astype(np.float32)


def _manifest_imu(path, imu_span: str = "clip") -> np.ndarray:
    sampling = ClipSampling(num_frames=T, image_size=32, mode="sparse", imu_span=imu_span)
    ds = ManifestClips(manifest_records(read_manifest(path)), path.parent, sampling,
                       use_imu=True, imu_rate=SAMPLES_PER_FRAME, fps=FPS)
    return np.stack([ds[i]["imu"].numpy() for i in range(len(ds))])


def _imu_classifier(train_x: np.ndarray, train_y: np.ndarray) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(IMUBranch(32, n_fft=32, hop=8, width=16), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())


def test_manifest_imu_covers_the_clip_span_of_real_recordings(basic_motions):
    x, _, path = basic_motions["test"]
    np.testing.assert_allclose(_manifest_imu(path), _direct(x), rtol=0, atol=1e-5)
    # the per-frame cut reads 8 x 1/30 s = 2.7 % of the recording: far from it
    frames = _manifest_imu(path, "frames")
    assert np.abs(frames - _direct(x)).mean() > 10 * 1e-5


def test_imu_only_accuracy_is_the_same_through_the_manifest_path(basic_motions):
    train_x, train_y, _ = basic_motions["train"]
    test_x, test_y, test_path = basic_motions["test"]
    model = _imu_classifier(_direct(train_x), train_y)
    direct = _accuracy(model, _direct(test_x), test_y)
    through_manifest = _accuracy(model, _manifest_imu(test_path), test_y)
    assert through_manifest == direct
    assert direct > 0.5  # four classes: chance is 0.25
