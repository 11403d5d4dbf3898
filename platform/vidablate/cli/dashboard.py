"""``vidablate dashboard``: build the static reproduction dashboard from MLflow and the spaces."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dashboard.site import build_site
from ..sweep.tracking import resolve_tracking_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidablate dashboard",
                                     description=__doc__.split(": ", 1)[1])
    parser.add_argument("--out", type=Path, default=Path("site"),
                        help="folder of the site (default ./site); open its index.html")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--spaces", type=Path, default=None,
                        help="a folder of your own space files, listed after the shipped ones")
    parser.add_argument("--mlflow-ui", default=None,
                        help="base URL of the MLflow UI for the links (default: the tracking "
                             "server, else http://127.0.0.1:5000 of `mlflow ui`)")
    args = parser.parse_args(argv)
    files = build_site(resolve_tracking_uri(args.tracking_uri), args.out, args.spaces,
                       args.mlflow_ui)
    print(f"dashboard: {len(files)} pages in {args.out}; open {args.out / 'index.html'}")
    return 0
