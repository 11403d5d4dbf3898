"""Command line behind ``jobs/prepare_data.py``: write dataset manifests and check them.

    python jobs/prepare_data.py txt train_list.txt --root /data/k400 --class-names k400.csv \\
        --out data/k400/train.parquet
    python jobs/prepare_data.py csv train.csv --root /data/k400 --class-names k400.csv --out data/k400
    python jobs/prepare_data.py folder --root /data/hmdb51/videos --out data/hmdb51/all.parquet
    python jobs/prepare_data.py uestc /data/UESTC-MMEA-CL/train.txt --root /data/UESTC-MMEA-CL \\
        --out data/uestc_mmea_cl/train.parquet
    python jobs/prepare_data.py synthetic --out data/synthetic --num-classes 8
    python jobs/prepare_data.py validate data/k400/train.parquet --class-names k400.csv
    python jobs/prepare_data.py transcode data/k400/train.parquet --out data/k400_256

Writing subcommands store paths relative to the manifest's folder when they lie under it and
absolute otherwise (``manifest.rebase_paths``), so the manifest resolves with an empty
``data.video_root``; then they validate the result (``--no-validate`` skips it) and print
counts. Exit codes: 0 clean, 1 validation found problems (the manifest is still written),
2 bad arguments or input (one ``error: ...`` line, no traceback).

The converters are ``vidablate.data.converters``, the checks ``vidablate.data.validate``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pyarrow as pa

from ..errors import ConfigError
from . import converters as cv
from . import manifest as mf


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _writing_options(sub: argparse.ArgumentParser, *, fps: float = 30.0) -> None:
    sub.add_argument("--out", required=True, type=Path,
                     help="manifest path (.parquet) or a folder for <name>.parquet")
    sub.add_argument("--split", help="value of the manifest's split column")
    _check_options(sub, fps=fps)
    sub.add_argument("--no-validate", action="store_true", help="skip the check of the result")


def _check_options(sub: argparse.ArgumentParser, *, fps: float = 30.0) -> None:
    sub.add_argument("--no-decode", action="store_true",
                     help="check that files exist without decoding them")
    sub.add_argument("--backend", default="auto", help="video decoder: auto | decord | pyav | torchcodec")
    sub.add_argument("--workers", type=int, default=4, help="threads for the file checks")
    sub.add_argument("--fps", type=float, default=fps, help="frame rate of frame-folder clips")
    sub.add_argument("--imu-tolerance", type=float, default=0.5,
                     help="seconds the IMU may differ from the clip's duration")


def build_parser() -> argparse.ArgumentParser:
    """The ``prepare_data`` argument parser (subcommands txt, csv, folder, uestc, synthetic,
    transcode, validate)."""
    parser = _Parser(prog="prepare_data",
                     description="Write dataset manifests (Parquet) and check them.")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = subs.add_parser("txt", help="'path label' or 'path num_frames label' list (X-CLIP, TSN)")
    p.add_argument("list_file", type=Path)
    p.add_argument("--root", required=True, type=Path, help="folder the list's paths are under")
    p.add_argument("--class-names", required=True, type=Path, help="class-name file")
    _writing_options(p)

    p = subs.add_parser("csv", help="PySlowFast 'path,label' csv (optional header)")
    p.add_argument("csv_file", type=Path)
    p.add_argument("--root", required=True, type=Path, help="folder the csv's paths are under")
    p.add_argument("--class-names", required=True, type=Path, help="class-name file")
    p.add_argument("--sep", default=",", help="field separator (' ' for whitespace)")
    _writing_options(p)

    p = subs.add_parser("folder", help="one subfolder of videos per class")
    p.add_argument("--root", required=True, type=Path, help="folder holding the class folders")
    p.add_argument("--class-names", type=Path,
                   help="where to write the class names (default: classnames.csv by the manifest)")
    p.add_argument("--extensions", default=",".join(mf.VIDEO_EXTENSIONS),
                   help="comma-separated video file extensions")
    _writing_options(p)

    p = subs.add_parser("uestc", help="a UESTC-MMEA-CL split list (converts the sensor csvs)")
    p.add_argument("list_file", type=Path, help="train.txt / val.txt / test.txt")
    p.add_argument("--root", required=True, type=Path,
                   help="dataset folder holding video/ and sensor/")
    p.add_argument("--class-names", type=Path,
                   help="class-name file (default: from the '<n>_<name>' folders, written to "
                        "classnames.csv by the manifest)")  # fmt: skip
    p.add_argument("--imu-dir", type=Path,
                   help="where converted IMU files go (default: imu/ by the manifest)")
    p.add_argument("--frames-dir", help="read clips as frame folders under this folder")
    p.add_argument("--video-dir", default="video")
    p.add_argument("--sensor-dir", default="sensor")
    p.add_argument("--acc-sensitivity", type=float, default=cv.UESTC_ACC_SENSITIVITY,
                   help="raw accelerometer counts per g")
    p.add_argument("--gyro-sensitivity", type=float, default=cv.UESTC_GYRO_SENSITIVITY,
                   help="raw gyroscope counts per deg/s")
    p.add_argument("--imu-rate", type=float, default=cv.UESTC_IMU_RATE_HZ,
                   help="sensor rows per second")
    _writing_options(p, fps=cv.UESTC_IMU_RATE_HZ)

    p = subs.add_parser("synthetic", help="export the embedded synthetic dataset as files")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--splits", default="train,test")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written videos")
    for name, default in (("num-classes", 32), ("train-per-class", 24), ("test-per-class", 8),
                          ("num-frames", 8), ("image-size", 32), ("imu-rate", 16),
                          ("num-distractors", 1), ("seed", 0)):  # fmt: skip
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--no-validate", action="store_true", help="skip the check of the result")

    p = subs.add_parser("transcode", help="re-encode a manifest's videos for sparse sampling "
                                          "(short side 256, a keyframe every 16 frames)")
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", required=True, type=Path,
                   help="folder for the re-encoded videos and the rewritten manifest")
    p.add_argument("--root", type=Path, help="root of relative paths (default: manifest folder)")
    p.add_argument("--short-side", type=int,
                   help="short side in pixels, never upscaled; 0 keeps the size (default 256)")
    p.add_argument("--gop", type=int, help="keyframe interval in frames (default 16)")
    p.add_argument("--crf", type=int, help="x264 quality (default 23, x264's own)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="encoding processes (default: one per core)")
    p.add_argument("--no-validate", action="store_true", help="skip the check of the result")

    p = subs.add_parser("validate", help="check a manifest; exit code 1 on problems")
    p.add_argument("manifest", type=Path)
    p.add_argument("--root", type=Path, help="root of relative paths (default: manifest folder)")
    p.add_argument("--class-names", type=Path, help="class-name file to check labels against")
    p.add_argument("--num-classes", type=int)
    imu = p.add_mutually_exclusive_group()
    imu.add_argument("--imu", dest="imu", action="store_const", const=True, default=None,
                     help="require an IMU file per row")
    imu.add_argument("--no-imu", dest="imu", action="store_const", const=False,
                     help="skip the IMU checks")
    p.add_argument("--examples", type=int, default=5, help="example rows shown per problem")
    _check_options(p)
    return parser


def _out_path(out: Path, stem: str) -> Path:
    return out if out.suffix == ".parquet" else out / f"{stem}.parquet"


def _counts(table: pa.Table) -> str:
    labels = table.column("label").to_pylist()
    text = f"{table.num_rows} clips, {len(set(labels))} classes"
    if "imu" in table.column_names:
        text += f", {table.num_rows - table.column('imu').null_count} with imu"
    return text


def _validate(args: argparse.Namespace, path: Path, class_names: list[str] | None,
              imu: bool | None = None, root: Path | None = None) -> bool:
    """Validate a written or given manifest, print the summary; True when clean."""
    # .validate decodes through .frames/.video (torch, torchvision: ~4 s to import); loaded
    # here so --help and argument errors answer at once.
    from .validate import validate_manifest

    report = validate_manifest(
        path, root=root, class_names=class_names, num_classes=getattr(args, "num_classes", None),
        decode=not getattr(args, "no_decode", False), imu=imu,
        imu_tolerance_s=getattr(args, "imu_tolerance", 0.5),
        backend=getattr(args, "backend", "auto"), workers=getattr(args, "workers", 4),
        fps=getattr(args, "fps", 30.0),
    )  # fmt: skip
    print(report.summary(getattr(args, "examples", 5)))
    return report.ok


def _write(args: argparse.Namespace, table: pa.Table, out: Path, names: list[str]) -> int:
    """Rebase paths to the manifest's folder, write, print counts, validate."""
    table = mf.rebase_paths(table, args.root, out.parent)
    mf.write_manifest(table, out)
    print(f"wrote {out}: {_counts(table)} (of {len(names)})")
    if args.no_validate:
        return 0
    return 0 if _validate(args, out, names) else 1


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "txt":
        names = mf.read_class_names(args.class_names)
        table = cv.from_path_label_txt(args.list_file, root=args.root, class_names=names,
                                       split=args.split)  # fmt: skip
        return _write(args, table, _out_path(args.out, args.list_file.stem), names)
    if cmd == "csv":
        names = mf.read_class_names(args.class_names)
        table = cv.from_path_label_csv(args.csv_file, root=args.root, class_names=names,
                                       sep=args.sep, split=args.split)  # fmt: skip
        return _write(args, table, _out_path(args.out, args.csv_file.stem), names)
    if cmd == "folder":
        exts = [e.strip() for e in args.extensions.split(",") if e.strip()]
        table, names = cv.from_folder_tree(args.root, exts, split=args.split)
        out = _out_path(args.out, args.split or args.root.name)
        written = mf.write_class_names(names, args.class_names or out.parent / "classnames.csv")
        print(f"wrote {written}: {len(names)} class names")
        return _write(args, table, out, names)
    if cmd == "uestc":
        out = _out_path(args.out, args.list_file.stem)
        if args.class_names is not None:
            names = mf.read_class_names(args.class_names)
        else:
            names = cv.uestc_mmea_cl_class_names(args.root, [args.list_file],
                                                 video_dir=args.video_dir,
                                                 sensor_dir=args.sensor_dir)  # fmt: skip
            written = mf.write_class_names(names, out.parent / "classnames.csv")
            print(f"wrote {written}: {len(names)} class names")
        table = cv.from_uestc_mmea_cl(
            args.root, args.list_file, class_names=names,
            imu_dir=args.imu_dir or out.parent / "imu", video_dir=args.video_dir,
            sensor_dir=args.sensor_dir, frames_dir=args.frames_dir,
            acc_sensitivity=args.acc_sensitivity, gyro_sensitivity=args.gyro_sensitivity,
            imu_rate_hz=args.imu_rate, split=args.split, workers=args.workers,
        )  # fmt: skip
        return _write(args, table, out, names)
    if cmd == "synthetic":
        # .synthetic imports torch (seconds); only this subcommand needs it.
        from .synthetic import SyntheticSpec

        spec = SyntheticSpec(
            num_classes=args.num_classes, train_per_class=args.train_per_class,
            test_per_class=args.test_per_class, num_frames=args.num_frames,
            image_size=args.image_size, imu_rate=args.imu_rate,
            num_distractors=args.num_distractors, noise=args.noise, seed=args.seed,
        )  # fmt: skip
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        paths = cv.export_synthetic(args.out, spec, splits=splits, fps=args.fps)
        names = mf.read_class_names(paths["classnames"])
        clean = True
        for split in splits:
            print(f"wrote {paths[split]}: {_counts(mf.read_manifest(paths[split]))}")
            if not args.no_validate:
                clean &= _validate(args, paths[split], names, imu=True)
        print(f"wrote {paths['classnames']}: {len(names)} class names")
        return 0 if clean else 1
    if cmd == "transcode":
        # .transcode decodes and encodes through .video (torch: ~4 s to import); loaded here so
        # --help and argument errors answer at once.
        from .transcode import Encoding, transcode_manifest

        chosen = {"short_side": args.short_side, "gop": args.gop, "crf": args.crf}
        enc = Encoding(**{k: v for k, v in chosen.items() if v is not None},
                       threads=1 if args.workers > 1 else 0)
        report = transcode_manifest(args.manifest, args.out, root=args.root, enc=enc,
                                    workers=args.workers)
        print(report.summary())
        clean = not report.failed
        if not args.no_validate:
            clean &= _validate(args, report.manifest, None)
        return 0 if clean else 1
    # validate
    names = mf.read_class_names(args.class_names) if args.class_names else None
    return 0 if _validate(args, args.manifest, names, imu=args.imu, root=args.root) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``prepare_data`` command; returns the exit code (0 clean, 1 problems found,
    2 bad arguments or input)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or an argument error (already printed)
        return int(exc.code or 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _run(args)
        except (ConfigError, ValueError, OSError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
