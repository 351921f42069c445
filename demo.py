"""A demo page for a saved model in the browser, or a Hugging Face Space serving it: `python demo.py MODEL [...]`.

The command line lives in vit_scratch/cli/demo.py (`python demo.py --help`)."""

import sys

from vit_scratch.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
