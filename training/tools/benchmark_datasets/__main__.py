"""``python -m training.tools.benchmark_datasets``."""

import sys

from training.tools.benchmark_datasets.cli import main

sys.exit(main())
