"""Frame folders: clips stored as folders of frame images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

# isort: split
from tests.data.videos import random_frames
from vidablate.data.frames import FrameFolder
from vidablate.data.video import VideoDecodeError

# ------------------------------------------------------------------ frame folders


def test_frame_folder_reads_images_in_natural_order(tmp_path):
    frames = random_frames(11, 8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"img_{i}.png")  # img_10 after img_9
    (tmp_path / "notes.txt").write_text("ignored")
    with FrameFolder(tmp_path, fps=12.5) as folder:
        assert folder.num_frames == 11 and folder.fps == 12.5
        np.testing.assert_array_equal(folder.get([10, 2, 2]), frames[[10, 2, 2]])
        assert folder.get([]).shape == (0, 8, 8, 3)
        with pytest.raises(IndexError):
            folder.get([11])
    (tmp_path / "img_11.png").write_bytes(b"garbage")
    with pytest.raises(VideoDecodeError, match="img_11.png"):
        FrameFolder(tmp_path).get([11])
    (tmp_path / "none").mkdir()
    with pytest.raises(VideoDecodeError, match="no frame images"):
        FrameFolder(tmp_path / "none")
