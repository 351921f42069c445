"""Evaluate a saved model on one split of a dataset: `python validate.py MODEL [--split test] [...]`.

The command line lives in vit_scratch/cli/validate.py (`python validate.py --help`)."""

import sys

from vit_scratch.cli.validate import main

if __name__ == "__main__":
    sys.exit(main())
