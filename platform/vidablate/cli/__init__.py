"""The ``vidablate`` command: one entry point with a subcommand per job.

    vidablate ablate space=isclip_modules          # a paper's table on Ray, logged to MLflow
    vidablate ablate -m space=isclip_modules,isclip_sensors dry_run=true
    vidablate cache space=motionprompt_key_designs # only the frozen-prefix feature cache
    vidablate prepare uestc LIST --root DIR --out MANIFEST.parquet
    vidablate pretrain --out tiny.pt               # rebuild the embedded tiny CLIP
    vidablate status                               # every space: run or not, verdicts
    vidablate dashboard --out site/                # the static reproduction dashboard
    vidablate predict RUN_OR_CHECKPOINT VIDEO [--imu FILE]

``jobs/*.py`` are the same commands for ``ray job submit -- python jobs/...``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "ablate": ("vidablate.cli.ablate", "ablate",
               "run a table or HPO space (Hydra: space=NAME key=value ...; -m for multirun)"),
    "cache": ("vidablate.cli.ablate", "cache",
              "build a table's frozen-prefix feature cache, train nothing (same arguments)"),
    "prepare": ("vidablate.data.prepare", "main",
                "write and validate dataset manifests (prepare --help)"),
    "pretrain": ("vidablate.cli.pretrain", "main", "rebuild the embedded tiny CLIP"),
    "status": ("vidablate.cli.status", "main", "every space: last run, seeds, failures, verdicts"),
    "dashboard": ("vidablate.cli.dashboard", "main",
                  "build the static reproduction dashboard from MLflow and the spaces"),
    "predict": ("vidablate.cli.predict", "main",
                "top-k classes of a finished trial on a video (plus IMU for IS-CLIP rows)"),
}


def usage() -> str:
    lines = ["usage: vidablate COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "vidablate COMMAND --help for a command's options "
              "(vidablate ablate --help lists the spaces)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``vidablate COMMAND ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"vidablate: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[args[0]]
    # each command imports only its own dependencies, so `vidablate --help` starts at once
    code = getattr(importlib.import_module(module), func)(args[1:])
    return int(code or 0)
