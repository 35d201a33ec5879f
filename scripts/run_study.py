"""Run the whole study on the embedded dataset and write <out>/report.{md,html} (see pipeline/study.py).

    python scripts/run_study.py --out runs/demo            # the demo (bash scripts/demo.sh)
    python scripts/run_study.py --out runs/quick --quick   # a ~2-minute smoke version
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.study import main  # noqa: E402
from utils.errors import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
