"""Classify image files and folders with a saved model: `python predict.py MODEL IMAGE_OR_FOLDER... [...]`.

The command line lives in vit_scratch/cli/predict.py (`python predict.py --help`)."""

import sys

from vit_scratch.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
