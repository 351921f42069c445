"""Odd images in an image folder: what each becomes (the same held or streamed, and in predict.py), the file's path in
every error, and a decompression bomb refused from its header before any pixel is decoded."""

import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from vit_scratch.config.schema import DataArguments
from vit_scratch.errors import DataError

SIZE = 4  # the model's image size here: 4 x 4 images are not resized


def _uniform(mode: str, colour, size=(SIZE, SIZE)) -> PIL.Image.Image:
    return PIL.Image.new(mode, size, colour)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height (its data is one pixel's): what a decompression bomb's header says."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


# class folder -> (how the file is written, the RGB every pixel must become)
def _sixteen_bit(path):
    PIL.Image.fromarray(np.full((SIZE, SIZE), 40000, dtype=np.uint16)).save(path)  # mode I;16


def _cmyk(path):
    _uniform("CMYK", (0, 255, 255, 0)).save(path, quality=100)


def _palette_transparent(path):
    image = PIL.Image.new("P", (SIZE, SIZE), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.save(path, transparency=0)  # every pixel is index 0: fully transparent


def _animated(path):
    first, second = _uniform("RGB", (255, 0, 0)), _uniform("RGB", (0, 0, 255))
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)


ODD = {
    "a_16bit": ("x.png", _sixteen_bit, (156, 156, 156)),  # 40000 >> 8; Pillow's own conversion: 255 (white)
    "b_cmyk": ("x.jpg", _cmyk, (255, 0, 0)),
    "c_palette_alpha": ("x.png", _palette_transparent, (10, 20, 30)),  # the colour under the transparency
    "d_animated": ("x.gif", _animated, (255, 0, 0)),  # the first frame
    "e_one_pixel": ("x.png", lambda p: _uniform("RGB", (7, 77, 177), (1, 1)).save(p), (7, 77, 177)),
    "f_large": ("x.png", lambda p: _uniform("RGB", (90, 60, 30), (1500, 1000)).save(p), (90, 60, 30)),  # resized
    "g_grey_alpha": ("x.png", lambda p: _uniform("LA", (120, 0)).save(p), (120, 120, 120)),
}


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd") / "images"
    for name, (file, write, _) in ODD.items():
        (root / name).mkdir(parents=True)
        write(root / name / file)
    return root


def _args(folder: Path, **kwargs) -> DataArguments:
    return DataArguments(name=str(folder), test_split=None, validation_size=0, **kwargs)


def test_each_odd_image_becomes_what_the_readme_says_held_and_streamed(odd_folder, tmp_path):
    from vit_scratch.data import open_image_data
    from vit_scratch.inference import open_image

    source = open_image_data(_args(odd_folder, cache_dir=str(tmp_path / "cache")), SIZE, 3)
    held, streamed = source.decode().train, source.lazy().train
    names = source.class_names
    for images in (held.images, streamed.images[np.arange(len(streamed))]):
        for image, label in zip(images, held.labels.tolist(), strict=True):
            expected = ODD[names[label]][2]
            got = image.numpy().reshape(3, -1)
            assert np.abs(got - np.array(expected)[:, None]).max() <= 2, (names[label], got[:, :3])
    for name, (file, _, expected) in ODD.items():  # predict.py opens a file the same way
        image = np.asarray(open_image(odd_folder / name / file).resize((SIZE, SIZE), PIL.Image.Resampling.BICUBIC))
        assert np.abs(image.reshape(-1, 3) - np.array(expected)).max() <= 2, name


def _truncated_jpeg(path):
    _uniform("RGB", (1, 2, 3), (64, 64)).save(path.with_suffix(".tmp.jpg"))
    data = path.with_suffix(".tmp.jpg").read_bytes()
    path.with_suffix(".tmp.jpg").unlink()
    path.write_bytes(data[: len(data) // 2])


NOT_AN_IMAGE = "UnidentifiedImageError: not an image file Pillow can read"
UNREADABLE = {"random bytes": ("b.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50), NOT_AN_IMAGE),
              "empty file": ("b.png", lambda p: p.write_bytes(b""), NOT_AN_IMAGE),
              "truncated JPEG": ("b.jpg", _truncated_jpeg, "OSError: Truncated File Read")}


@pytest.mark.parametrize("storage", ["decode", "lazy"])
@pytest.mark.parametrize("kind", UNREADABLE)
def test_an_unreadable_image_in_a_folder_is_named_by_its_path(tmp_path, storage, kind):
    """Held (decode) or streamed (lazy): one line naming the file. Before: "split 'train', row 1" (which file is row 1
    of a folder?)."""
    from vit_scratch.data import open_image_data

    root = tmp_path / "images"
    for name in ("cat", "dog"):  # two classes: one would be no label column
        (root / name).mkdir(parents=True)
        _uniform("RGB", (1, 2, 3)).save(root / name / "a.png")
    file, write, cause = UNREADABLE[kind]
    write(root / "cat" / file)
    source = open_image_data(_args(root, cache_dir=str(tmp_path / "cache")), SIZE, 3)
    with pytest.raises(DataError) as error:
        images = getattr(source, storage)().train.images
        images[np.arange(len(images))]
    message = str(error.value)
    assert f"split 'train', file {root / 'cat' / file}: cannot decode column 'image': {cause}" in message \
        and "\n" not in message, message


def test_a_decompression_bomb_is_refused_from_its_header_in_one_line(tmp_path):
    """A PNG saying 12,000 x 12,000 (144 MP; a few bytes on disk): refused before decoding, naming the file and the
    limit. Pillow alone only warns below 178,956,970 pixels and would decode it."""
    from vit_scratch.data import open_image_data
    from vit_scratch.inference import open_image

    root = tmp_path / "images"
    for name in ("cat", "dog"):  # two classes: one would be no label column
        (root / name).mkdir(parents=True)
        _uniform("RGB", (1, 2, 3)).save(root / name / "a.png")
    _png_header_only(root / "cat" / "bomb.png", 12_000, 12_000)
    expected = "refused: 12000 x 12000 = 144,000,000 pixels, above the limit of 89,478,485 (a decompression bomb?)"
    with pytest.raises(DataError) as error:
        open_image_data(_args(root, cache_dir=str(tmp_path / "cache")), SIZE, 3).decode()
    assert str(error.value).endswith(f"file {root / 'cat' / 'bomb.png'}: {expected}"), str(error.value)
    with pytest.raises(DataError) as error:  # predict.py
        open_image(root / "cat" / "bomb.png")
    assert str(error.value) == f"{root / 'cat' / 'bomb.png'}: {expected}"
    _png_header_only(root / "cat" / "bomb.png", 20_000, 20_000)  # beyond Pillow's own error threshold too
    with pytest.raises(DataError, match="refused: more than 178,956,970 pixels, above the limit of 89,478,485"):
        open_image(root / "cat" / "bomb.png")
