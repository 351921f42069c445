"""Image files as `pipeline("image-classification")` opens them: found (folders searched), decoded, checked.

Pillow and the standard library only: the torch backend (inference.py) and the torch-free one (onnx_runtime.py)
open files the same way.
"""

from collections.abc import Sequence
from pathlib import Path

import PIL.Image
import PIL.ImageOps

from vit_scratch.cli.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def find_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given, folders searched recursively for IMAGE_EXTENSIONS (sorted), duplicates dropped.

    Raises DataError for a path that does not exist or a folder without images; a file given by name is taken
    whatever its extension (`check_images` then says whether it is an image).
    """
    found = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not images:
                raise DataError(f"{name}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder or below")
            found += images
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{name}: no such file or folder")
    return list(dict.fromkeys(found))


def open_image(path: Path, num_channels: int = 3) -> PIL.Image.Image:
    """A file as `pipeline` opens it (transformers' `load_image`): decoded, EXIF orientation applied, RGB (L for
    one-channel models). Raises DataError naming the file when it is not a readable image."""
    try:
        with PIL.Image.open(path) as image:
            image.load()  # decodes now: a truncated file fails here, not halfway through the predictions
            return PIL.ImageOps.exif_transpose(image).convert("L" if num_channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


def check_images(paths: Sequence[Path]) -> None:
    """Open every image once before anything is computed or written, so that one bad file stops the run clean."""
    for path in paths:
        open_image(path)
