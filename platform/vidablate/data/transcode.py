"""Re-encode a dataset's videos for sparse sampling: short side ``SHORT_SIDE``, a keyframe every
``GOP`` frames, and its manifest rewritten to point at them.

Decoding frame i costs decoding every frame from the keyframe before it, so TSN's sparse
sampling (T frames spread over the whole video) pays about half a keyframe interval per frame;
x264's default interval is up to 250 frames, and source videos are often far larger than the
224 px crops the recipes train on. ``transcode_video`` decodes a file once in order (PyAV) and
encodes it again with H.264 at the same frame count and rate; ``transcode_manifest`` does that
for every row of a manifest (in worker processes), writes each file under a temporary name and
renames it when complete (an interrupted run re-encodes only what is missing), and writes the
new manifest with the same rows, labels, IMU files and clip spans. Frame-folder rows are kept
as they are (their frames are already random access). Audio is not carried over; a
variable-frame-rate source becomes constant-rate at its average rate (frame i stays frame i).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import manifest as mf
from .video import VideoDecodeError, VideoFile

SHORT_SIDE = 256
"""The largest short side the training transforms use at 224 px (``train_clip``'s scale
jitter and X-CLIP's multi-scale crop reach 256/224 x size), so nothing they read is lost."""
GOP = 16
"""Keyframe interval in frames (this project's choice): sparse T=8 over a 10 s, 30 fps clip
puts one target every ~37 frames, so each costs ~8 decoded frames instead of ~125."""
CRF = 23
"""x264's default quality (the ``crf`` option)."""


@dataclass(frozen=True)
class Encoding:
    """How ``transcode_video`` re-encodes: short side (0 keeps the size; never upscaled),
    keyframe interval, x264 quality, encoder threads (0: x264 decides)."""

    short_side: int = SHORT_SIDE
    gop: int = GOP
    crf: int = CRF
    threads: int = 0

    def __post_init__(self) -> None:
        if self.short_side < 0 or self.short_side % 2:
            raise ValueError(f"short side must be an even number >= 0, got {self.short_side}")
        if self.gop < 1:
            raise ValueError(f"gop (keyframe interval) must be >= 1, got {self.gop}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")


def target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side ``short_side`` (even sides, aspect kept); the size
    itself when ``short_side`` is 0 or the video is already that small (rounded to even)."""
    scale = short_side / min(height, width) if short_side else 1.0
    scale = min(scale, 1.0)
    return (max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2))


def transcode_video(src: str | Path, dst: str | Path, enc: Encoding = Encoding()) -> dict:
    """Re-encode ``src`` into the mp4 ``dst`` (written as ``dst``'s temporary sibling, then
    renamed); returns its frame count, size and rate. Raises ``VideoDecodeError`` naming
    ``src`` when it cannot be read, before ``dst`` exists."""
    import av  # PyAV loads FFmpeg's libraries: only encoding needs them

    src, dst = Path(src), Path(dst)
    with VideoFile(src, "pyav") as probe:  # the frame count the loaders see, and the rate
        frames, fps = probe.num_frames, probe.fps
        height, width = probe.height, probe.width
    if not fps > 0:
        raise VideoDecodeError(src, "no frame rate in its header; cannot re-encode at one")
    out_h, out_w = target_size(height, width, enc.short_side)
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    written = 0
    try:
        with av.open(str(src)) as inp, av.open(str(tmp), mode="w", format="mp4") as out:
            istream = inp.streams.video[0]
            istream.thread_type = "AUTO"
            # a keyframe exactly every gop frames: no scene-cut keyframes in between
            ostream = out.add_stream("libx264", rate=rate, options={
                "crf": str(enc.crf), "threads": str(enc.threads),
                "x264-params": f"keyint={enc.gop}:min-keyint={enc.gop}:scenecut=0"})
            ostream.width, ostream.height, ostream.pix_fmt = out_w, out_h, "yuv420p"
            ostream.codec_context.gop_size = enc.gop
            for frame in inp.decode(istream):
                picture = frame.reformat(width=out_w, height=out_h, format="yuv420p",
                                         interpolation="AREA")
                picture.pts, picture.time_base = written, 1 / rate
                picture.pict_type = av.video.frame.PictureType.NONE  # the source's I-frames
                # would otherwise be forced keyframes of the new stream
                out.mux(ostream.encode(picture))
                written += 1
            out.mux(ostream.encode(None))
        if written != frames:
            raise VideoDecodeError(src, f"decoded {written} of its {frames} frames")
        tmp.replace(dst)
    except (av.FFmpegError, OSError) as exc:
        raise VideoDecodeError(src, f"re-encoding failed ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return {"frames": written, "height": out_h, "width": out_w, "fps": float(rate)}


def _done(dst: Path) -> bool:
    """An output of an earlier run (renamed into place only when whole) that still opens."""
    if not dst.is_file():
        return False
    try:
        VideoFile(dst, "pyav").close()
    except VideoDecodeError:
        return False
    return True


def _one(job: tuple[str, str, Encoding]) -> tuple[str, str | None, bool]:
    """Worker: (source, error or None, re-used an earlier output)."""
    src, dst, enc = job
    if _done(Path(dst)):
        return src, None, True
    try:
        transcode_video(src, dst, enc)
    except VideoDecodeError as exc:
        return src, str(exc), False
    return src, None, False


@dataclass
class TranscodeReport:
    """What ``transcode_manifest`` did: files encoded, kept from an earlier run, frame folders
    left as they were, and (source, reason) of the files that failed."""

    manifest: Path
    encoded: int = 0
    reused: int = 0
    folders: int = 0
    failed: list[tuple[str, str]] | None = None

    def summary(self) -> str:
        failed = self.failed or []
        text = (f"wrote {self.manifest}: {self.encoded} videos re-encoded, {self.reused} kept "
                f"from an earlier run, {self.folders} frame folders left as they were")
        if failed:
            text += f"; {len(failed)} failed (not in the manifest):" + "".join(
                f"\n  {src}: {why}" for src, why in failed[:10])
        return text


SETTINGS = "transcode.json"
"""The encoding an output folder was written with (a rerun keeps its finished files)."""


def _claim(out: Path, enc: Encoding) -> None:
    """Record ``enc`` in ``out``, or refuse a folder written with other settings, whose
    finished files a rerun would otherwise keep as they are."""
    path, want = out / SETTINGS, asdict(enc)
    want.pop("threads")  # the pictures do not depend on it
    if path.is_file():
        had = json.loads(path.read_text())
        if had != want:
            raise mf.ManifestError(f"{path}: {out} holds videos encoded with {had}, not {want}; "
                                   f"choose another output folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want))


def transcode_manifest(manifest: str | Path, out: str | Path, *, root: str | Path | None = None,
                       enc: Encoding = Encoding(), workers: int = 1,
                       log: Callable[[str], None] | None = print) -> TranscodeReport:
    """Re-encode every video of ``manifest`` into the folder ``out`` (the same relative layout
    under it; absolute paths keep their parts below ``/``) and write ``out/<manifest name>``.
    Rows whose video fails are left out of the new manifest and listed in the report."""
    manifest, out = Path(manifest), Path(out)
    table = mf.read_manifest(manifest)
    base = Path(root) if root is not None else manifest.parent
    sources = [Path(os.path.abspath(mf.resolve_video(v, base)))
               for v in table.column("video").to_pylist()]
    outputs: list[Path] = []
    for stored in table.column("video").to_pylist():
        rel = Path(stored).with_suffix(".mp4")
        outputs.append(Path(os.path.abspath(out / (rel.relative_to(rel.anchor)
                                                   if rel.is_absolute() else rel))))
    clash = next((s for s, d in zip(sources, outputs, strict=True) if s == d), None)
    if clash is not None:
        raise mf.ManifestError(f"{manifest}: re-encoding into {out} would overwrite {clash}; "
                               f"choose another output folder")
    if len(set(outputs)) != len(outputs):
        raise mf.ManifestError(f"{manifest}: two rows' videos map to one output name (same "
                               f"stem, different extensions); rename one")
    _claim(out, enc)
    report = TranscodeReport(out / manifest.name, failed=[])
    jobs = [(str(s), str(d), enc) for s, d in zip(sources, outputs, strict=True)
            if not s.is_dir()]
    report.folders = len(sources) - len(jobs)
    failed: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for n, (src, error, reused) in enumerate(pool.map(_one, jobs), 1):
            if error is not None:
                failed[src] = error
            elif reused:
                report.reused += 1
            else:
                report.encoded += 1
            if log is not None and (n % 100 == 0 or n == len(jobs)):
                log(f"transcode: {n}/{len(jobs)} files")
    report.failed = sorted(failed.items())
    videos = [str(d) if not s.is_dir() else str(s) for s, d in zip(sources, outputs,
                                                                     strict=True)]
    keep = np.array([str(s) not in failed for s in sources], dtype=bool)
    new = table.set_column(table.column_names.index("video"), "video",
                           pa.array(videos, type=pa.string()))
    new = mf.rebase_paths(new.filter(pa.array(keep)), base, out)
    mf.write_manifest(new, report.manifest)
    return report
