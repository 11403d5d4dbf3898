"""Run a paper's ablation table (or an HPO space) on Ray and log it to MLflow.

    python jobs/ablate.py space=isclip_modules
    ray job submit --working-dir . -- python jobs/ablate.py space=isclip_modules
"""

import sys
from pathlib import Path

try:
    import vidablate  # noqa: F401
except ImportError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vidablate.sweep.cli import CONFIG_DIR, main


@hydra.main(config_path=CONFIG_DIR, config_name="ablate", version_base="1.3")
def ablate(cfg: DictConfig) -> None:
    sys.exit(main(cfg, list(HydraConfig.get().overrides.task)))


if __name__ == "__main__":
    ablate()
