"""Train a ViTScratch image classifier: `accelerate launch train.py --config FILE [--SECTION.KEY VALUE ...]`.

The command line lives in vit_scratch/cli/train.py (`python train.py --help` lists every key)."""

import sys

from vit_scratch.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
