"""Write dataset manifests (Parquet) from list files, class folders, UESTC-MMEA-CL or the
synthetic set, and validate them before training.

    python jobs/prepare_data.py --help
    python jobs/prepare_data.py uestc /data/UESTC-MMEA-CL/train.txt --root /data/UESTC-MMEA-CL \\
        --out data/uestc_mmea_cl/train.parquet
    python jobs/prepare_data.py validate data/uestc_mmea_cl/train.parquet \\
        --class-names data/uestc_mmea_cl/classnames.csv
    python jobs/prepare_data.py transcode data/uestc_mmea_cl/train.parquet --out /data/short256
"""

import sys
from pathlib import Path

try:
    import vidablate  # noqa: F401
except ImportError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from vidablate.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
