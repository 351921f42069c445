"""Example images for the demo page: one held-out image per class, written into the run's output folder.

At the end of training `write_examples(OUTPUT / EXAMPLES_DIR, ...)` saves the first image of each of the first
`MAX_EXAMPLES` classes of the test split (the validation split when there is no test split) as `NN_CLASS.png`, at
the size the model sees them; the folder, and so its Hub repo, then carries them, and `demo.py` shows them to click.
"""

import re
from pathlib import Path

import numpy as np
import PIL.Image

from vit_scratch.atomic import atomic_folder
from vit_scratch.data import ImageSplit

EXAMPLES_DIR = "examples"
MAX_EXAMPLES = 10


def example_name(index: int, class_name: str) -> str:
    """`03_cat.png`: the class index keeps the page's order; anything but letters, digits, - and _ becomes _."""
    return f"{index:02d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', class_name).strip('_') or 'class'}.png"


def write_examples(folder: Path, split: ImageSplit | None, class_names: list[str]) -> list[Path]:
    """The first image of each of the first MAX_EXAMPLES classes in `split` as PNGs in `folder` (replaced whole,
    atomically). Classes absent from the split get none; no split, none."""
    if split is None or len(split) == 0:
        return []
    labels = split.labels.numpy()
    classes = [c for c in range(min(MAX_EXAMPLES, len(class_names))) if (labels == c).any()]
    if not classes:
        return []
    rows = np.array([int(np.argmax(labels == c)) for c in classes])
    images = split.images[rows].numpy()  # uint8 (n, C, S, S): held or decoded now (a streamed split)
    with atomic_folder(folder) as staging:
        for c, image in zip(classes, images, strict=True):
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            PIL.Image.fromarray(np.ascontiguousarray(pixels)).save(staging / example_name(c, class_names[c]))
    return sorted(Path(folder).iterdir())
