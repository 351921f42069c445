"""Odd files in an image folder, each alone beside good images, through the data path held and streamed: how many
decoded, how many were refused in one line naming the file, how many raised anything else.

    python bench/odd_images.py

The inputs: a 0-byte file, random bytes, a truncated JPEG, a 144-megapixel PNG (its header: a decompression bomb),
a 16-bit PNG, a CMYK JPEG, a palette PNG with transparency, an animated GIF, a .txt file, a 1 x 1 image. Each goes
into class folder `odd/` (beside a plain PNG) of a fresh folder whose `good/` holds two more; the folder is opened with
`data.open_image_data` and decoded whole (`decode()`, storage device/host) and row by row (`lazy()`, storage
stream), at 32 px.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import test_odd_images as images  # noqa: E402
from vit_scratch.config.schema import DataArguments  # noqa: E402
from vit_scratch.data import open_image_data  # noqa: E402
from vit_scratch.errors import DataError  # noqa: E402

INPUTS = {
    "0-byte file": ("x.png", lambda p: p.write_bytes(b"")),
    "random bytes": ("x.png", lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000))),
    "truncated JPEG": ("x.jpg", images._truncated_jpeg),
    "144-megapixel PNG": ("x.png", lambda p: images._png_header_only(p, 12_000, 12_000)),
    "16-bit PNG": ("x.png", images._sixteen_bit),
    "CMYK JPEG": ("x.jpg", images._cmyk),
    "palette PNG with transparency": ("x.png", images._palette_transparent),
    "animated GIF": ("x.gif", images._animated),
    ".txt file": ("x.txt", lambda p: p.write_text("not an image")),
    "1 x 1 image": ("x.png", lambda p: PIL.Image.new("RGB", (1, 1), (7, 77, 177)).save(p)),
}


def main() -> int:
    counts = {"decoded": 0, "refused": 0, "other error line": 0, "raised": 0}
    with tempfile.TemporaryDirectory() as root:
        for i, (what, (file, write)) in enumerate(INPUTS.items()):
            folder = Path(root) / f"case{i}"
            for name in ("good", "odd"):
                (folder / name).mkdir(parents=True)
            for k, name in enumerate(("good", "good", "odd")):
                PIL.Image.new("RGB", (32, 32), (k, 2, 3)).save(folder / name / f"{k}.png")
            write(folder / "odd" / file)
            for storage in ("decode", "lazy"):
                args = DataArguments(name=str(folder), test_split=None, validation_size=0,
                                     cache_dir=str(Path(root) / f"cache{i}{storage}"))
                try:
                    split = getattr(open_image_data(args, 32, 3), storage)().train
                    split.images[np.arange(len(split))]
                    outcome, detail = "decoded", f"{len(split)} images"
                except DataError as error:
                    named = str(folder / "odd" / file) in str(error) and "\n" not in str(error)
                    outcome = "refused" if named else "other error line"
                    detail = str(error).split(": ", 1)[1] if named else str(error)
                except Exception as error:  # what this script counts
                    outcome, detail = "raised", f"{type(error).__name__}: {error}"
                counts[outcome] += 1
                print(f"{what:<30} {storage:<7} {outcome:<8} {detail[:150]}", flush=True)
    print(f"{sum(counts.values())} inputs (10 files x held/streamed): {counts['decoded']} decoded, {counts['refused']} "
          f"refused in one line naming the file, {counts['other error line']} another one-line error, "
          f"{counts['raised']} raised anything else")
    return 1 if counts["raised"] else 0


if __name__ == "__main__":
    sys.exit(main())
