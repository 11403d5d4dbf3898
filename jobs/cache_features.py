"""Build the frozen-prefix feature cache of a table (a Ray job over the cluster), train nothing.

The same command line as jobs/ablate.py; the entries land in cache_path (default
<storage_path>/feature_cache), where the table run finds them.

    python jobs/cache_features.py space=motionprompt_key_designs
    ray job submit --working-dir . -- python jobs/cache_features.py space=motionprompt_key_designs
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
def cache_features(cfg: DictConfig) -> None:
    sys.exit(main(cfg, list(HydraConfig.get().overrides.task), cache_only=True))


if __name__ == "__main__":
    cache_features()
