"""Export a saved model to ONNX (fp32 and int8) for serving without PyTorch: `python export.py MODEL [...]`.

The command line lives in vit_scratch/cli/export.py (`python export.py --help`)."""

import sys

from vit_scratch.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
