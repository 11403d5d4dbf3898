"""``vidablate status``: every space with its last sweep in MLflow, as a text table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dashboard.collect import collect
from ..sweep.tracking import resolve_tracking_uri


def lines(tracking_uri: str, spaces: Path | None = None) -> list[str]:
    out = [f"{'space':<28} {'last run':<20} {'commit':<12} {'seeds':<12} {'failed':>6}  "
           f"{'effects +/-/=':<14} {'claims R/C/I':<12} stale"]
    for s in collect(tracking_uri, spaces, details=[]):
        if s.run is None:
            out.append(f"{s.name:<28} {'not run' if not s.error else 'invalid: ' + s.error}")
            continue
        effects = "/".join(str(s.effects(k)) if s.effects(k) is not None else "-"
                           for k in ("agree", "disagree", "flat"))
        claims = "/".join(str(s.count(k)) for k in ("reproduced", "contradicted",
                                                      "inconclusive"))
        out.append(f"{s.name:<28} {s.started:<20} {s.commit:<12} {s.seeds:<12} {s.failed:>6}  "
                   f"{effects:<14} {claims:<12} {'; '.join(s.stale) or 'no'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidablate status", description=__doc__.split(": ")[1])
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--spaces", type=Path, default=None,
                        help="a folder of your own space files, listed after the shipped ones")
    args = parser.parse_args(argv)
    print("\n".join(lines(resolve_tracking_uri(args.tracking_uri), args.spaces)))
    return 0
