"""Image files as training decodes them and `pipeline("image-classification")` opens them: found (folders searched),
decoded (a decompression bomb refused from its header), converted to L/RGB, checked.

Pillow and the standard library only: the torch backend (inference.py) and the torch-free one (onnx_runtime.py)
open files the same way.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path

import PIL.Image
import PIL.ImageOps

from vit_scratch.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own warning threshold (a 9,459 px square, 268 MB as RGB): refused above


class ImageRefused(ValueError):
    """An image this project will not decode (too many pixels: a decompression bomb, or simply too big)."""


def open_image_bytes(source) -> PIL.Image.Image:
    """`PIL.Image.open(source)` (a path or a file object), refusing an image of more than MAX_IMAGE_PIXELS pixels
    from its header, before any pixel is decoded. Pillow alone only warns up to twice that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
        try:
            image = PIL.Image.open(source)
        except PIL.Image.DecompressionBombError:
            raise ImageRefused(f"more than {2 * PIL.Image.MAX_IMAGE_PIXELS:,} pixels, above the limit of "
                               f"{MAX_IMAGE_PIXELS:,} (a decompression bomb?)") from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageRefused(f"{image.width} x {image.height} = {image.width * image.height:,} pixels, above the "
                           f"limit of {MAX_IMAGE_PIXELS:,} (a decompression bomb?)")
    return image


def to_mode(image: PIL.Image.Image, num_channels: int) -> PIL.Image.Image:
    """Any decoded image -> L or RGB. 16-bit grey keeps its top 8 bits (Pillow's own conversion clips it: nearly all
    white); CMYK, palette and the rest take Pillow's conversion, which drops transparency (a transparent pixel
    shows the colour stored under it, as `pipeline` shows it); an animated image is its first frame."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")  # >255 still clips
    return image.convert("L" if num_channels == 1 else "RGB")


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
    """A file as training decodes it (`to_mode`; as `pipeline` does but for 16-bit grey, which it clips): decoded,
    EXIF orientation applied, RGB (L for one-channel models); more than MAX_IMAGE_PIXELS refused. Raises DataError
    naming the file when it is not a readable image."""
    try:
        with open_image_bytes(path) as image:
            image.load()  # decodes now: a truncated file fails here, not halfway through the predictions
            return to_mode(PIL.ImageOps.exif_transpose(image), num_channels)
    except ImageRefused as error:
        raise DataError(f"{path}: refused: {error}") from None
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


def check_images(paths: Sequence[Path]) -> None:
    """Open every image once before anything is computed or written, so that one bad file stops the run clean."""
    for path in paths:
        open_image(path)
