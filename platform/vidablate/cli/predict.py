"""``vidablate predict``: the top-k classes of a finished trial on your own video.

    vidablate predict RUN_ID clip.mp4                     # an MLflow child run of a sweep
    vidablate predict ray_results/<sweep>-train/<trial>/checkpoint_000002 clip.mp4
    vidablate predict RUN_ID clip.mp4 --imu clip.csv      # IS-CLIP rows read the IMU too
    vidablate predict RUN_ID clip.mp4 --classes my_labels.txt  # score your own class names
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..data.manifest import read_class_names
from ..errors import ConfigError
from ..sweep.tracking import CHECKPOINT_TAG, resolve_tracking_uri
from ..train.predict import checkpoint_config, predict


def _from_run(run_id: str, tracking_uri: str) -> tuple[str, dict[str, Any] | None]:
    """(checkpoint location, resolved config) of an MLflow child run."""
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise ConfigError(f"{run_id!r} is neither a checkpoint folder nor a run in MLflow "
                          f"{tracking_uri}: {err.message.splitlines()[0]}") from None
    where = run.data.tags.get(CHECKPOINT_TAG)
    if not where:
        raise ConfigError(f"run {run_id} has no {CHECKPOINT_TAG} tag: the trial did not finish "
                          "(or ran before the tag existed); pass its checkpoint folder")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, "config.yaml", tmp)
        except Exception:  # noqa: BLE001 - older runs have no config.yaml: use the checkpoint's
            return where, None
        raw = yaml.safe_load(Path(local).read_text())
    return where, {k: raw[k] for k in ("data", "model", "trainer", "eval") if k in raw}


@contextlib.contextmanager
def _local(where: str) -> Iterator[str]:
    """A checkpoint on local disk, downloaded first when it lives in cloud storage."""
    if "://" not in where:
        yield where
        return
    from ray.train import Checkpoint  # only remote checkpoints need Ray's storage layer

    with Checkpoint(path=where).as_directory() as directory:
        yield directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidablate predict",
                                     description=__doc__.splitlines()[0].split(": ", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("trial", help="an MLflow run id of a finished trial, or its checkpoint "
                                      "folder (the one holding state.pt)")
    parser.add_argument("video", type=Path, help="a video file (mp4, avi, ...)")
    parser.add_argument("--imu", type=Path, default=None,
                        help="the clip's IMU CSV (t, acc_xyz, gyro_xyz), for rows that read it")
    parser.add_argument("--classes", type=Path, default=None,
                        help="class names to score (csv id,name or one per line); default "
                             "the trial's label space")
    parser.add_argument("-k", type=int, default=5, help="how many classes to print (default 5)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store of the run (default $MLFLOW_TRACKING_URI, else "
                             "./mlflow.db)")
    args = parser.parse_args(argv)
    try:
        if Path(args.trial).is_dir():
            where, experiment = args.trial, None
        else:
            where, experiment = _from_run(args.trial, resolve_tracking_uri(args.tracking_uri))
        names = read_class_names(args.classes) if args.classes else None
        with _local(where) as directory:
            experiment = experiment or checkpoint_config(directory)
            top = predict(directory, experiment, args.video, args.imu, names, args.k)
    except (ConfigError, ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}")
        return 2
    width = max(len(p.name) for p in top)
    for rank, p in enumerate(top, 1):
        print(f"{rank}. {p.name:<{width}}  {p.score:.4f}")
    return 0
