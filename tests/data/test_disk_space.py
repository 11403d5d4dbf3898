"""Disk space: NoSpaceError's message, and a feature-cache build on a size-limited folder (a
real tmpfs) that fails ahead of writing, or while writing, without leaving a partial part."""

from __future__ import annotations

import errno
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from vidablate.data import cache
from vidablate.errors import NoSpaceError, ensure_space, free_space, no_space_error, out_of_space

MiB = 2**20
MESSAGE = re.compile(r"^no space left on (?P<path>.+): need (?P<need>\d+) MiB, (?P<free>\d+) free$")


def expected(path: object, need: int, free: int) -> str:
    return f"no space left on {path}: need {-(-need // MiB)} MiB, {free // MiB} free"


# -- the message ----------------------------------------------------------------------------

@pytest.mark.parametrize(("need", "free", "text"), [
    (3 * MiB, 2 * MiB, "need 3 MiB, 2 free"),
    (3 * MiB + 1, 2 * MiB - 1, "need 4 MiB, 1 free"),
    (1, 0, "need 1 MiB, 0 free"),
    (0, 0, "need 0 MiB, 0 free"),
])
def test_the_message_rounds_need_up_and_free_down(need, free, text):
    err = NoSpaceError("/data/cache/abc", need, free)
    assert str(err) == f"no space left on /data/cache/abc: {text}"
    assert (err.path, err.need, err.free) == ("/data/cache/abc", need, free)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC


def test_the_error_survives_pickling_as_ray_sends_it():
    err = pickle.loads(pickle.dumps(NoSpaceError(Path("/x/y"), 5 * MiB, MiB)))
    assert str(err) == "no space left on /x/y: need 5 MiB, 1 free"
    assert (err.path, err.need, err.free, err.errno) == ("/x/y", 5 * MiB, MiB, errno.ENOSPC)


def test_ensure_space_measures_the_nearest_existing_parent(tmp_path):
    missing = tmp_path / "not" / "yet"
    assert free_space(missing) == shutil.disk_usage(tmp_path).free
    ensure_space(missing, 0)
    with pytest.raises(NoSpaceError) as info:
        ensure_space(missing, 2**62)
    assert info.value.path == str(missing) and info.value.need == 2**62
    assert MESSAGE.match(str(info.value))


def test_enospc_is_found_inside_the_errors_torch_and_numpy_raise(tmp_path):
    def torch_like() -> RuntimeError:
        try:
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail] unexpected pos") from None
        except RuntimeError as exc:
            return exc

    wrapped = torch_like()  # the OSError is its __context__ only
    assert out_of_space(wrapped)
    err = no_space_error(wrapped, tmp_path, 7 * MiB)
    assert isinstance(err, NoSpaceError) and err.need == 7 * MiB
    assert str(err) == expected(tmp_path, 7 * MiB, err.free)
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert no_space_error(OSError(errno.EACCES, "Permission denied"), tmp_path, 1) is None
    assert no_space_error(RuntimeError("other"), tmp_path, 1) is None
    same = NoSpaceError(tmp_path, 1, 0)
    assert no_space_error(same, tmp_path, 5) is same


# -- the feature-cache writer on a small disk -------------------------------------------------

class _Encoder(torch.nn.Module):
    """The frozen prefix's interface ``build_part`` uses: [N, 3, H, W] -> [N, L, W] tokens."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.tokens, self.width = tokens, width

    def prefix(self, frames: torch.Tensor) -> torch.Tensor:
        base = frames.mean(dim=(1, 2, 3))[:, None, None]
        return base + torch.arange(self.tokens * self.width).reshape(1, self.tokens,
                                                                     self.width) * 1e-3


class _Clips(Dataset):
    def __init__(self, rows: int, frames: int, imu: tuple[int, int] | None = None) -> None:
        self.rows, self.frames, self.imu = rows, frames, imu

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        item = {"video": torch.rand(self.frames, 3, 4, 4, generator=g), "label": i % 3}
        if self.imu:
            item["imu"] = torch.rand(*self.imu, generator=g)
        return item


def _entry(root: Path, rows: int = 16, frames: int = 4, tokens: int = 64, width: int = 256
           ) -> cache.Entry:
    return cache.Entry("base", "k" * 32, str(root / ("k" * 32)), {"select": "all"}, rows, 1,
                       False, frames, tokens, width, "float32", rows)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_an_entry_that_does_not_fit_is_refused_before_anything_is_written(small_disk):
    disk = small_disk("2m")
    entry = _entry(disk)  # 16 rows x 4 frames x 64 tokens x 256 x 4 B = 4 MiB
    free = shutil.disk_usage(disk).free
    with pytest.raises(NoSpaceError) as info:
        cache.prepare(entry)
    need = entry.part_bytes(0)
    assert need > 4 * MiB
    assert str(info.value) == expected(entry.root, need, free) == \
        f"no space left on {entry.root}: need 5 MiB, 2 free"
    assert _files(disk) == []


def test_a_part_that_does_not_fit_is_refused_ahead_of_computing_and_writing(small_disk,
                                                                           monkeypatch):
    disk = small_disk("2m")
    entry = _entry(disk)
    Path(entry.root).mkdir()
    free = shutil.disk_usage(disk).free
    computed = []
    monkeypatch.setattr(cache, "compute_tokens", lambda *a, **k: computed.append(1))
    with pytest.raises(NoSpaceError) as info:
        cache.build_part(entry, _Clips(entry.rows, entry.frames), _Encoder(64, 256), 0,
                         torch.device("cpu"))
    assert str(info.value) == expected(entry.root, entry.part_bytes(0), free)
    assert (info.value.need, info.value.free) == (entry.part_bytes(0), free)
    assert computed == [] and _files(Path(entry.root)) == []


def test_running_out_of_space_while_writing_tokens_leaves_no_partial_file(small_disk,
                                                                         monkeypatch):
    """The estimate is ignored (as if another writer filled the disk after the check): the
    kernel's ENOSPC on the tokens file becomes NoSpaceError and the temporary file goes."""
    disk = small_disk("2m")
    entry = _entry(disk)
    monkeypatch.setattr(cache, "ensure_space", lambda path, need: None)
    cache.prepare(entry)
    with pytest.raises(NoSpaceError) as info:
        cache.build_part(entry, _Clips(entry.rows, entry.frames), _Encoder(64, 256), 0,
                         torch.device("cpu"))
    err = info.value
    assert MESSAGE.match(str(err)) and err.path == entry.root
    assert str(err) == expected(entry.root, err.need, err.free)
    assert err.need >= 4 * MiB and err.free < MiB  # measured when the write failed
    assert out_of_space(err.__cause__)
    assert _files(Path(entry.root)) == ["meta.json"]
    assert cache.state(entry) == ("partial", [0])


def test_running_out_of_space_on_the_second_file_removes_the_first(small_disk, monkeypatch):
    """Tokens (1.8 MiB) fit on the 2 MiB disk, the aux arrays (512 KiB of IMU) do not: the
    tokens file already renamed into place is removed too, and no .done is written."""
    disk = small_disk("2m")
    entry = _entry(disk, tokens=29)
    monkeypatch.setattr(cache, "ensure_space", lambda path, need: None)
    cache.prepare(entry)
    written, write = [], cache._write_atomic

    def spy(path, *args):
        write(path, *args)
        written.append(path.name)

    monkeypatch.setattr(cache, "_write_atomic", spy)
    with pytest.raises(NoSpaceError) as info:
        cache.build_part(entry, _Clips(entry.rows, entry.frames, imu=(1024, 8)),
                         _Encoder(29, 256), 0, torch.device("cpu"))
    assert written == ["part-00000.npy"]  # renamed into place, then the aux write failed
    tokens, aux = 16 * 4 * 29 * 256 * 4, 16 * 8 + 16 + 16 * 1024 * 8 * 4
    assert info.value.need == tokens + aux + cache.WRITE_MARGIN  # the whole part
    assert str(info.value) == expected(entry.root, info.value.need, info.value.free)
    assert _files(Path(entry.root)) == ["meta.json"]


def test_a_stale_done_marker_goes_when_its_part_is_rebuilt_and_fails(small_disk, monkeypatch):
    disk = small_disk("2m")
    entry = _entry(disk)
    monkeypatch.setattr(cache, "ensure_space", lambda path, need: None)
    cache.prepare(entry)
    entry.path(0, ".done").write_text('{"rows": 16}')  # an old, damaged part
    with pytest.raises(NoSpaceError):
        cache.build_part(entry, _Clips(entry.rows, entry.frames), _Encoder(64, 256), 0,
                         torch.device("cpu"))
    assert _files(Path(entry.root)) == ["meta.json"]


def test_with_room_the_same_code_writes_a_complete_part(small_disk):
    disk = small_disk("8m")
    entry = _entry(disk)
    data, encoder = _Clips(entry.rows, entry.frames), _Encoder(64, 256)
    assert cache.prepare(entry) == [0]
    cache.build_part(entry, data, encoder, 0, torch.device("cpu"))
    assert _files(Path(entry.root)) == ["meta.json", "part-00000.aux.npz", "part-00000.done",
                                        "part-00000.npy"]
    assert cache.state(entry) == ("complete", [])
    clips = cache.CachedClips(entry)
    video = data[5]["video"]
    want = cache.compute_tokens(encoder, video[None], "all")[0]
    np.testing.assert_allclose(clips[5]["tokens"].numpy(), want.numpy(), rtol=1e-6)
    assert int(clips[5]["label"]) == 5 % 3
