"""Build the frozen-prefix feature cache of a table (a Ray job over the cluster), train nothing;
the same as ``vidablate cache``.

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

from vidablate.cli.ablate import cache

if __name__ == "__main__":
    sys.exit(cache(sys.argv[1:]))
