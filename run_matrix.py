#!/usr/bin/env python3
"""Entry point: `python run_matrix.py matrices/small_models.yaml` (see README). The logic lives in harness/."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
