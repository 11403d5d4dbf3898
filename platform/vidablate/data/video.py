"""Real-video loading: frame-accurate decoding (decord, PyAV or torchcodec), clip sampling and
transforms.

Decoding: ``VideoFile`` gives random access to the frames of one file by index, where frame i
is the i-th frame in presentation order (the order decord uses). Three backends give the same
pictures for the same indices: decord (x86_64 wheels only, last released 2021), PyAV (always
installed; seeks to the keyframe before each wanted run of frames and decodes forward, exact on
files with B-frames and several keyframes) and torchcodec (PyTorch's maintained decoder; it
loads the system's FFmpeg 4-8 shared libraries, e.g. Debian's ``libavcodec59``, and is
available only where they are installed). One exception: in an mp4 cut by stream copy, frames before
the edit list's start are decoded but not shown; PyAV leaves them out, decord 0.6 counts them
and returns shifted frames. ``write_video`` encodes uint8 RGB frames with PyAV (tests, the
end-to-end test and the synthetic exporter use it).

Sampling (``sample_indices``) follows the two practices of the CLIP-video papers: ``sparse``
is TSN segment sampling (Wang et al. 2016), the X-CLIP default (Ni et al. 2022: mmaction
``SampleFrames(clip_len=1, num_clips=T)``); ``dense`` is SlowFast's T frames x rate window
(Feichtenhofer et al. 2019).

Transforms (``train_clip``, ``eval_views``) turn uint8 frames [T, H, W, 3] into float32
[T, 3, S, S] normalised with ``CLIP_MEAN``/``CLIP_STD`` (defined here; the synthetic set uses
them too), with X-CLIP's training augmentation (TSN multi-scale crop, flip, colour jitter,
grayscale) and its 1- or 3-crop test views. Every frame of a clip shares one draw of the
random parameters (the clip is one input to the torchvision v2 transforms).

Clips stored as folders of frame images: ``vidablate.data.frames``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

# CLIP's per-channel normalisation of [0, 1] RGB pixels, (x - mean) / std: used by the
# transforms here and by the synthetic dataset (``vidablate.data.synthetic`` re-exports them).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BACKENDS = ("decord", "pyav", "torchcodec")
"""``data.decoder='auto'`` takes the first of these that is available (decord, else PyAV)."""
AUG_STYLES = ("tsn", "jitter")
"""Training augmentation: X-CLIP's TSN-style pipeline, or PySlowFast's scale jitter."""
SAMPLING = ("sparse", "dense")


class VideoDecodeError(RuntimeError):
    """A video cannot be opened or a frame cannot be decoded; str() is f"{path}: {reason}"."""

    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        # Picklable (DataLoader workers, Ray) although __init__ takes two arguments.
        return type(self), (self.path, self.reason)


# ---- backends ----------------------------------------------------------------------------


@functools.cache
def _importable(name: str) -> bool:
    try:
        __import__(name)  # the backend probe: is this optional decoder installed?
    except (ImportError, RuntimeError, OSError):  # torchcodec: no FFmpeg libraries to load
        return False
    return True


_MODULES = {"decord": "decord", "pyav": "av", "torchcodec": "torchcodec.decoders"}


def available_backends() -> list[str]:
    """The decoding backends importable here, in ``BACKENDS`` order."""
    return [b for b in BACKENDS if _importable(_MODULES[b])]


def resolve_backend(name: str) -> str:
    """Map the ``data.decoder`` knob to a backend: "auto" is decord if importable, else PyAV."""
    available = available_backends()
    if name == "auto":
        if not available:
            raise ValueError("data.decoder='auto' but neither decord nor av (PyAV) is installed")
        return available[0]
    if name not in BACKENDS:
        raise ValueError(f"data.decoder must be one of {('auto', *BACKENDS)}, got {name!r}")
    if name not in available:
        module = _MODULES[name]
        raise ValueError(
            f"data.decoder={name!r} is not available here (cannot import {module}); "
            f"use one of {('auto', *available)}"
        )
    return name


class _DecordReader:
    """decord.VideoReader with its errors mapped to VideoDecodeError."""

    def __init__(self, path: Path) -> None:
        import decord  # optional (x86_64 wheels only): needed only when this backend is chosen

        self._errors = (decord.DECORDError, RuntimeError)
        self.path = path
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except self._errors as exc:
            raise VideoDecodeError(path, f"decord cannot open it ({_first_line(exc)})") from exc
        self._shape: tuple[int, int] | None = None

    def shape(self) -> tuple[int, int]:
        if self._shape is None:  # decord exposes the size only by decoding a frame
            self._shape = tuple(self.decode(np.zeros(1, dtype=np.int64)).shape[1:3])
        return self._shape

    def decode(self, indices: np.ndarray) -> np.ndarray:
        try:
            batch = self._vr.get_batch(indices.tolist())
            return batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        except self._errors as exc:
            raise VideoDecodeError(self.path, f"decord failed ({_first_line(exc)})") from exc

    def close(self) -> None:
        self._vr = None


class _PyAVReader:
    """PyAV decoding by frame index: seek to the keyframe before a frame, decode forward.

    Frame i is the shown packet with the i-th smallest pts (what decord counts too). Opening
    demuxes every packet once (no decoding) to learn the pts and keyframes; a file with fewer
    packets than its header lists is truncated and refused, as decord does.
    """

    def __init__(self, path: Path) -> None:
        import av  # PyAV loads FFmpeg's libraries: only decoding needs it, not the transforms

        self._av = av
        self.path = path
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
            raise VideoDecodeError(path, f"PyAV cannot open it ({_first_line(exc)})") from exc
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = self._stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            pts, keys, packets = [], [], 0
            for packet in self._container.demux(stream):
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # the flush packet that ends demuxing
                packets += 1
                # Packets before an edit list's start are decoded but never shown: not frames.
                if packet.size and not packet.is_discard:
                    pts.append(packet.pts)
                    keys.append(packet.is_keyframe)
            if stream.frames > packets:
                raise VideoDecodeError(path, f"only {packets} of the {stream.frames} frames its "
                                             "header lists are present (truncated file?)")
            ctx = stream.codec_context
            self._shape = (int(ctx.height), int(ctx.width))
        except VideoDecodeError:
            self.close()
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.close()
            raise VideoDecodeError(path, f"PyAV cannot read it ({_first_line(exc)})") from exc
        self.num_frames = len(pts)  # stream.frames, less the packets an edit list hides
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        # Seeking needs every packet's pts; without them decode from the start, counting frames.
        self._seekable = bool(pts) and None not in pts and len(set(pts)) == len(pts)
        if self._seekable:
            order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
            self._pts = np.asarray(pts, dtype=np.int64)[order]
            self._index = {int(p): i for i, p in enumerate(self._pts)}
            self._keys = np.flatnonzero(np.asarray(keys, dtype=bool)[order])
            if self._keys.size == 0 or self._keys[0] != 0:
                self._keys = np.concatenate([[0], self._keys]).astype(np.int64)

    def shape(self) -> tuple[int, int]:
        return self._shape

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """Frames at sorted, unique ``indices``."""
        try:
            if self._seekable:
                frames = self._decode_seeking(indices)
                if frames is not None:
                    return frames
            return self._decode_from_start(indices)
        except self._av.FFmpegError as exc:
            raise VideoDecodeError(self.path, f"PyAV failed ({_first_line(exc)})") from exc

    def _key_before(self, index: int) -> int:
        return int(self._keys[np.searchsorted(self._keys, index, side="right") - 1])

    def _decode_seeking(self, indices: np.ndarray) -> np.ndarray | None:
        """Decode forward from the keyframe before each target run; None if pts do not map."""
        out: list[np.ndarray] = []
        pos = 0
        while pos < len(indices):
            key = self._key_before(int(indices[pos]))
            while True:  # seek, decode forward; if we land past the target, seek earlier
                self._container.seek(int(self._pts[key]), stream=self._stream, backward=True)
                got, landed = self._decode_run(indices, pos, out)
                if got is None:
                    return None
                if not landed or key == 0:
                    break
                key = self._key_before(key - 1)  # landed after the target: go back a keyframe
            if got == pos:
                raise VideoDecodeError(
                    self.path, f"frame {int(indices[pos])} could not be decoded (stream ended)"
                )
            pos = got
        return np.stack(out)

    def _decode_run(self, indices: np.ndarray, pos: int, out: list) -> tuple[int | None, bool]:
        """Decode after a seek, appending targets from ``pos`` on; stops when a later target is
        better reached by seeking. Returns (next target position or None if a frame's pts is
        unknown, whether the first decoded frame came after the target)."""
        for count, frame in enumerate(self._container.decode(self._stream)):
            index = self._index.get(frame.pts) if frame.pts is not None else None
            if index is None:
                return None, False
            if index > indices[pos]:
                return pos, count == 0
            if index == indices[pos]:
                out.append(frame.to_ndarray(format="rgb24"))
                pos += 1
                if pos == len(indices):
                    return pos, False
                if self._key_before(int(indices[pos])) > index + 1:  # a keyframe lies between
                    return pos, False
        return pos, False

    def _decode_from_start(self, indices: np.ndarray) -> np.ndarray:
        """Count frames from the start (files whose packets lack usable pts)."""
        self._container.close()
        self._container = self._av.open(str(self.path))
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        wanted = {int(i): k for k, i in enumerate(indices)}
        out: list[np.ndarray | None] = [None] * len(indices)
        found = 0
        for index, frame in enumerate(self._container.decode(self._stream)):
            if index in wanted:
                out[wanted[index]] = frame.to_ndarray(format="rgb24")
                found += 1
                if found == len(indices):
                    return np.stack(out)
        missing = next(int(i) for i, f in zip(indices, out, strict=True) if f is None)
        raise VideoDecodeError(self.path, f"frame {missing} could not be decoded (stream ended)")

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()


class _TorchCodecReader:
    """torchcodec's VideoDecoder in exact seek mode (it scans the file once on opening, as the
    PyAV reader demuxes it), frames by presentation order; a file whose frames end before the
    duration its header lists is truncated and refused, as the other backends do."""

    def __init__(self, path: Path) -> None:
        # optional: importable only where FFmpeg's shared libraries are installed
        from torchcodec.decoders import VideoDecoder

        self.path = path
        try:
            self._dec = VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC",
                                     num_ffmpeg_threads=1)
            meta = self._dec.metadata
        except (RuntimeError, ValueError, OSError) as exc:
            raise VideoDecodeError(path, f"torchcodec cannot open it ({_first_line(exc)})"
                                   ) from exc
        self.num_frames = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps or 0.0)
        # Frame counts differ legitimately (an edit list hides decoded frames from the
        # content's count, not the header's); a truncated file's frames end early in time.
        listed, begin, end = (meta.duration_seconds_from_header,
                              meta.begin_stream_seconds_from_content,
                              meta.end_stream_seconds_from_content)
        if None not in (listed, begin, end) and self.fps > 0 and \
                end - begin < listed - 1.5 / self.fps:
            raise VideoDecodeError(path, f"its frames end at {end - begin:.2f} s of the "
                                         f"{listed:.2f} s its header lists (truncated file?)")
        self._shape = (int(meta.height), int(meta.width))

    def shape(self) -> tuple[int, int]:
        return self._shape

    def decode(self, indices: np.ndarray) -> np.ndarray:
        try:
            return self._dec.get_frames_at(indices.tolist()).data.numpy()
        except (RuntimeError, ValueError, IndexError) as exc:
            raise VideoDecodeError(self.path, f"torchcodec failed ({_first_line(exc)})"
                                   ) from exc

    def close(self) -> None:
        self._dec = None


_READERS = {"decord": _DecordReader, "pyav": _PyAVReader, "torchcodec": _TorchCodecReader}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class VideoFile:
    """Random frame access to one video file.

    ``get(indices)`` returns uint8 RGB frames [n, H, W, 3] in the order asked (repeats allowed);
    frame i is the i-th in presentation order, identical for all backends on
    constant-frame-rate files. Open and decode failures raise ``VideoDecodeError``.
    """

    def __init__(self, path, backend: str = "auto") -> None:
        self.path = Path(path)
        self.backend = resolve_backend(backend)
        if not self.path.is_file():
            raise VideoDecodeError(self.path, "no such file")
        self._reader = _READERS[self.backend](self.path)
        self.num_frames = int(self._reader.num_frames)
        self.fps = float(self._reader.fps)
        if self.num_frames <= 0:
            self.close()
            raise VideoDecodeError(self.path, "the video has no frames")

    @property
    def height(self) -> int:
        return int(self._reader.shape()[0])

    @property
    def width(self) -> int:
        return int(self._reader.shape()[1])

    def get(self, indices) -> np.ndarray:
        """uint8 [n, H, W, 3] RGB frames at ``indices`` (each in [0, num_frames))."""
        if self._reader is None:
            raise ValueError(f"{self.path}: the file is closed")
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"{self.path}: indices must be a 1-D sequence of ints, got {indices!r}")
        idx = idx.astype(np.int64)
        bad = idx[(idx < 0) | (idx >= self.num_frames)]
        if bad.size:
            raise IndexError(
                f"{self.path}: frame index {int(bad[0])} out of range [0, {self.num_frames})"
            )
        if idx.size == 0:
            return np.zeros((0, self.height, self.width, 3), dtype=np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._reader.decode(unique)
        return frames[inverse.reshape(-1)]

    def close(self) -> None:
        """Release the decoder (idempotent)."""
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoFile({str(self.path)!r}, backend={self.backend!r}, frames={self.num_frames})"


def write_video(
    path,
    frames: np.ndarray,
    fps: float = 8.0,
    codec: str = "libx264",
    crf: int = 18,
    *,
    gop: int | None = None,
    faststart: bool = False,
) -> Path:
    """Encode uint8 RGB frames [n, H, W, 3] (H, W even: yuv420p) with PyAV; return the path.

    ``gop`` is the keyframe interval (None: the codec's default); ``faststart`` puts the mp4
    index before the frames (as streaming sites do), so a truncated file still opens.
    """
    import av  # PyAV loads FFmpeg's libraries: only encoding needs it, not the transforms

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(
            f"frames must be uint8 [n>0, H, W, 3], got {frames.dtype} {list(frames.shape)}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(
            f"yuv420p needs an even height and width, got {height}x{width}: pad or crop the frames"
        )
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(10000)
    options = {"crf": str(crf)} if codec in ("libx264", "libx265") else {}
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=container_options) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = int(gop)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


# ---- sampling ----------------------------------------------------------------------------


def sample_indices(
    num_frames: int,
    clip_len: int,
    mode: str,
    *,
    train: bool,
    rate: int = 1,
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
    first: int = 0,
    last: int | None = None,
) -> np.ndarray:
    """Frame indices (int64 [clip_len], non-decreasing) of one clip from a video.

    Only frames ``first..last`` (inclusive; ``last`` defaults to ``num_frames - 1``) are used;
    let n = last - first + 1.

    * ``sparse`` (TSN segment sampling, the X-CLIP default; ``rate`` unused): the n frames are
      cut into ``clip_len`` equal segments [k n / T, (k+1) n / T). Train: a uniformly random
      position in each segment (``rng`` required). Eval: view v of V takes the position at
      fraction (v + 0.5) / V of each segment (one view: the segment centres, as TSN/mmaction
      test sampling). The frame is the floor of the position, so when n < T frames repeat,
      and when n == T train and eval both give exactly 0..T-1.
    * ``dense`` (SlowFast: T frames ``rate`` apart): a window of span (T-1) * rate + 1. Train:
      uniformly random start in [0, n - span]. Eval: one view starts at the centre
      ((n - span) // 2); V > 1 views start evenly spaced from 0 to n - span inclusive
      (rounded; mmaction's ``np.linspace`` test clips). When n < span the window starts at 0
      and indices past the end repeat the last frame.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer):
        raise ValueError(f"num_frames must be an int, got {num_frames!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode not in SAMPLING:
        raise ValueError(f"mode must be one of {SAMPLING}, got {mode!r}")
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if rate < 1:
        raise ValueError(f"rate must be >= 1, got {rate}")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if not 0 <= view < num_views:
        raise ValueError(f"view must be in [0, num_views={num_views}), got {view}")
    last = num_frames - 1 if last is None else last
    if not 0 <= first < num_frames:
        raise ValueError(f"first must be in [0, num_frames={num_frames}), got {first}")
    if not first <= last < num_frames:
        raise ValueError(f"last must be in [first={first}, num_frames={num_frames}), got {last}")
    if train and rng is None:
        raise ValueError("rng (a numpy Generator) is required when train=True")
    n, T = int(last - first + 1), int(clip_len)
    k = np.arange(T, dtype=np.int64)
    if mode == "sparse":
        # Integer arithmetic keeps the n == T identity exact.
        if train:
            offsets = (k * n + rng.integers(0, n, size=T)) // T  # position (k + u) n / T
        else:
            offsets = ((2 * k * num_views + 2 * view + 1) * n) // (2 * T * num_views)
    else:
        span = (T - 1) * rate + 1
        room = max(n - span, 0)
        if train:
            start = int(rng.integers(0, room + 1))
        elif num_views == 1:
            start = room // 2
        else:
            start = int(np.rint(view * room / (num_views - 1)))
        offsets = np.minimum(start + k * rate, n - 1)
    return (first + offsets).astype(np.int64)


# ---- transforms --------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation of X-CLIP (Ni et al. 2022), after TSN (Wang et al. 2016).

    A crop whose sides are ``scales`` x the short side (sides at most one scale step apart,
    at one of 5 fixed positions: TSN GroupMultiScaleCrop / mmaction MultiScaleCrop), resized
    to size x size; horizontal flip; ColorJitter(0.4, 0.4, 0.2, 0.1) with probability
    ``color_jitter``; grayscale with probability ``grayscale``. ``enabled=False`` gives the
    eval geometry (resize short side, centre crop) with no randomness.

    ``style="jitter"`` is PySlowFast's training transform instead (STDD's official code with
    AUG.ENABLE False): the short side resized to a random length in [size, size * 256 / 224]
    (TRAIN_JITTER_SCALES [224, 256]), a random size x size crop, the flip; no colour jitter
    or grayscale.
    """

    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    flip: float = 0.5
    color_jitter: float = 0.8
    grayscale: float = 0.2
    enabled: bool = True
    style: str = "tsn"

    def __post_init__(self) -> None:
        if self.style not in AUG_STYLES:
            raise ValueError(f"style must be one of {AUG_STYLES}, got {self.style!r}")
        if not self.scales or not all(0 < s <= 1 for s in self.scales):
            raise ValueError(f"scales must be a non-empty tuple in (0, 1], got {self.scales!r}")
        for name in ("flip", "color_jitter", "grayscale"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {value!r}")


_MEAN = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)


def _as_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] numpy -> uint8 [T, 3, H, W] tensor sharing memory (channels-last)."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
            or frames.shape[-1] != 3:
        shape = list(getattr(frames, "shape", []))
        raise ValueError(f"frames must be a uint8 numpy array [T, H, W, 3], got {shape}")
    if not frames.flags.writeable:
        frames = frames.copy()
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def _normalise(video: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float [..., 3, H, W] -> CLIP-normalised float32 (as SyntheticVideoIMU)."""
    if video.dtype == torch.uint8:
        video = video.float().div_(255.0)
    return ((video - _MEAN) / _STD).contiguous()


def _tv() -> tuple[Any, Any]:
    """torchvision's v2 transforms and their functional API, on first use: importing
    torchvision takes ~2 s (it loads torch._dynamo), which checking a command line does not
    need (``vidablate.config`` imports this module)."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional

    return v2, functional


def _resize_short(video: torch.Tensor, size: int) -> torch.Tensor:
    return _tv()[1].resize(video, [size], antialias=True)  # a no-op when the short side is already size


def eval_views(frames: np.ndarray, size: int, crops: int = 1) -> torch.Tensor:
    """Test views float32 [crops, T, 3, size, size]: short side resized to ``size``, then the
    centre crop (crops=1) or the start, centre and end along the long side (crops=3:
    X-CLIP / mmaction ThreeCrop). Frames already size x size are only normalised."""
    if crops not in (1, 3):
        raise ValueError(f"eval.spatial_crops must be 1 or 3, got {crops!r}")
    video = _resize_short(_as_video(frames), size)
    height, width = video.shape[-2:]
    centre = _tv()[1].center_crop(video, [size, size])
    if crops == 1:
        views = [centre]
    elif width >= height:
        views = [video[..., :size], centre, video[..., width - size:]]
    else:
        views = [video[..., :size, :], centre, video[..., height - size:, :]]
    return _normalise(torch.stack(views))


def _multiscale_box(height: int, width: int, scales: tuple[float, ...]) -> tuple[int, ...]:
    """(top, left, crop height, crop width) of TSN's multi-scale crop (max scale gap 1)."""
    base = min(height, width)
    sides = [max(1, int(base * s)) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    crop_h, crop_w = pairs[int(torch.randint(len(pairs), ()))]
    dy, dx = (height - crop_h) // 4, (width - crop_w) // 4
    corners = [(0, 0), (0, 4 * dx), (4 * dy, 0), (4 * dy, 4 * dx), (2 * dy, 2 * dx)]
    top, left = corners[int(torch.randint(len(corners), ()))]
    return top, left, crop_h, crop_w


@functools.lru_cache(maxsize=16)
def _photometric(spec: AugmentSpec) -> Any:
    v2 = _tv()[0]
    return v2.Compose([
        v2.RandomHorizontalFlip(spec.flip),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=spec.color_jitter),
        v2.RandomGrayscale(spec.grayscale),
    ])  # fmt: skip


def train_clip(frames: np.ndarray, size: int, spec: AugmentSpec) -> torch.Tensor:
    """One augmented training clip float32 [T, 3, size, size] (see ``AugmentSpec``).

    The randomness comes from torch's global RNG (DataLoader seeds it per worker). X-CLIP
    first resizes the short side to 256/224 * size; cropping the original frames at the same
    fractions and resizing once gives the same geometry with one interpolation.
    """
    if not spec.enabled:
        return eval_views(frames, size, 1)[0]
    video = _as_video(frames)
    if spec.style == "jitter":
        short = int(torch.randint(size, round(size * 256 / 224) + 1, ()))
        video = _tv()[1].resize(video, [short], antialias=True)
        height, width = video.shape[-2:]
        top = int(torch.randint(height - size + 1, ()))
        left = int(torch.randint(width - size + 1, ()))
        video = video[..., top:top + size, left:left + size]
        if float(torch.rand(())) < spec.flip:
            video = video.flip(-1)
        return _normalise(video)
    top, left, crop_h, crop_w = _multiscale_box(*video.shape[-2:], spec.scales)
    video = _tv()[1].resize(video[..., top:top + crop_h, left:left + crop_w], [size, size],
                            antialias=True)
    # A plain [T, 3, H, W] tensor is one input to v2, so all frames share one parameter draw.
    # Not tv_tensors.Video: RandomGrayscale passes videos through unchanged (torchvision 0.29).
    video = _photometric(spec)(video.float().div_(255.0))
    return _normalise(video)
