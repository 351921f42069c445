"""Per-image RandAugment / TrivialAugmentWide / AutoAugment (CIFAR-10 policy): each op against Pillow's on real
CIFAR-10 images, and the statistics that the kornia version got wrong (signs, per-image draws, magnitude 0, range);
AutoAugment's sub-policy and op frequencies.

Tolerances, on the 0..255 scale, measured on 200 CIFAR-10 test images:
- Shear, translate, posterize, solarize, equalize: exact (0 levels, every pixel), at every bin tested.
- Rotate: exact over RandAugment's range (<= 30 degrees); beyond it, up to 2.5% of pixels take a neighbouring source
  pixel (measured: 0.09% at 40.5 degrees, 1.9% at 135; Pillow's nearest sampling breaks ties differently, and
  float64 coordinates give the same figures).
- Brightness, autocontrast: <= 1 level (Pillow truncates each result to an integer, we keep floats).
- Color, contrast, sharpness: <= 2 levels, mean < 0.6 (Pillow also rounds its gray / mean / smoothed image to
  integers first; measured maximum 1.13 at RandAugment m=9, 1.52 at TrivialAugment's factor 1.99).
"""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from vit_scratch.autoaugment import (
    AUTOAUGMENT,
    CIFAR10_POLICY,
    NUM_BINS,
    OP,
    OPS,
    RANDAUGMENT,
    TRIVIALAUGMENT_WIDE,
    BatchAutoAugment,
    apply_ops,
    random_ops,
)
from vit_scratch.config.schema import AugmentArguments, ConfigError

N_IMAGES = 64
BLACK = (0, 0, 0)
SPACES = [RANDAUGMENT, TRIVIALAUGMENT_WIDE, AUTOAUGMENT]
SPACE_IDS = ["randaugment", "trivialaugment", "autoaugment"]
GEOMETRIC_BINS = {RANDAUGMENT: (1, 9, 17, 30), TRIVIALAUGMENT_WIDE: (1, 9, 17, 30), AUTOAUGMENT: (1, 3, 7, 9)}
ENHANCE_BINS = {RANDAUGMENT: (3, 9, 30), TRIVIALAUGMENT_WIDE: (3, 9, 30), AUTOAUGMENT: (3, 6, 9)}


@pytest.fixture(scope="module")
def cifar(cifar10_path):
    """The first N_IMAGES CIFAR-10 test images: (PIL images, float (N, 3, 32, 32) in [0, 1])."""
    table = pq.read_table(cifar10_path / "plain_text" / "test-00000-of-00001.parquet", columns=["img"])
    images = [Image.open(io.BytesIO(row["bytes"])).convert("RGB") for row in table.column("img")[:N_IMAGES].to_pylist()]
    pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    return images, pixels


def ours(pixels, name, bin_, sign, space=RANDAUGMENT) -> np.ndarray:
    """Apply op `name` to every image at one magnitude bin and sign; uint8-scale (N, H, W, C) floats."""
    n = len(pixels)
    out = apply_ops(pixels, torch.full((n,), float(OP[name])), torch.full((n,), float(bin_)),
                    torch.full((n,), float(sign)), space)
    return (out * 255).permute(0, 2, 3, 1).numpy().astype(np.float64)


def pillow(images, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(im)) for im in images]).astype(np.float64)


def affine(data):
    return lambda im: im.transform(im.size, Image.Transform.AFFINE, data, Image.Resampling.NEAREST, fillcolor=BLACK)


def rotate(degrees):
    return lambda im: im.rotate(degrees, Image.Resampling.NEAREST, fillcolor=BLACK)


def geometric_reference(name, bin_, sign, space):
    """Pillow's version of our geometric op (torchvision's semantics; Pillow maps output pixel centres to input)."""
    level = sign * bin_ / (space.num_bins - 1)
    shift = int(level * space.translate * (32 if space.translate_relative else 1))
    return {
        "shear_x": affine((1, space.shear * level, 0, 0, 1, 0)),
        "shear_y": affine((1, 0, 0, space.shear * level, 1, 0)),
        "translate_x": affine((1, 0, -shift, 0, 1, 0)),
        "translate_y": affine((1, 0, 0, 0, 1, -shift)),
        "rotate": rotate(space.rotate * level),
    }[name]


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
@pytest.mark.parametrize("name", ["shear_x", "shear_y", "translate_x", "translate_y", "rotate"])
def test_geometric_ops_match_pillow(cifar, name, space):
    images, pixels = cifar
    for bin_ in GEOMETRIC_BINS[space]:
        for sign in (1, -1):
            diff = np.abs(ours(pixels, name, bin_, sign, space) - pillow(images, geometric_reference(name, bin_, sign,
                                                                                                       space)))
            degrees = space.rotate * bin_ / (space.num_bins - 1)
            if name == "rotate" and degrees > 30:
                assert (diff > 0).mean() <= 0.025, (bin_, sign)  # nearest-neighbour ties (module docstring)
            else:
                assert diff.max() == 0, (name, bin_, sign, (diff > 0).mean())


def test_translate_magnitudes_are_torchvisions():
    # RandAugment: 150/331 of the side at bin 30, truncated to whole pixels: 4 px at m=9 on 32 x 32; TrivialAugment:
    # 32 px at bin 30, 9 px at bin 9.
    pixels = torch.zeros(2, 1, 32, 32)
    pixels[:, :, :, 0] = 1.0  # a white left column
    for space, expected in ((RANDAUGMENT, 4), (TRIVIALAUGMENT_WIDE, 9)):
        out = apply_ops(pixels, torch.full((2,), float(OP["translate_x"])), torch.full((2,), 9.0),
                        torch.tensor([1.0, -1.0]), space)
        assert out[0, 0, 0].nonzero().flatten().tolist() == [expected]  # moved right
        assert out[1, 0].sum() == 0  # moved out on the left


ENHANCERS = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
             "sharpness": ImageEnhance.Sharpness}


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
@pytest.mark.parametrize("name", list(ENHANCERS))
def test_enhance_ops_match_pillow(cifar, name, space):
    images, pixels = cifar
    tolerance = 1.0 if name == "brightness" else 2.0
    for bin_ in ENHANCE_BINS[space]:
        for sign in (1, -1):
            factor = 1 + sign * space.enhance * bin_ / (space.num_bins - 1)
            reference = pillow(images, lambda im, f=factor: ENHANCERS[name](im).enhance(f))
            diff = np.abs(ours(pixels, name, bin_, sign, space) - reference)
            assert diff.max() <= tolerance, (name, bin_, sign, diff.max())
            assert diff.mean() < 0.6


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
def test_posterize_and_solarize_match_pillow_exactly(cifar, space):
    images, pixels = cifar
    for bin_ in range(space.num_bins):
        bits = 8 - round(bin_ / ((space.num_bins - 1) / space.posterize_bits_off))  # torchvision's table
        assert np.array_equal(ours(pixels, "posterize", bin_, 1, space).round(3),
                              pillow(images, lambda im, b=bits: ImageOps.posterize(im, b)))
        threshold = torch.linspace(255.0, 0.0, space.num_bins)[bin_].item()  # torchvision's (float32: 187.0 at 8/31)
        assert np.array_equal(ours(pixels, "solarize", bin_, 1, space).round(3),
                              pillow(images, lambda im, t=threshold: ImageOps.solarize(im, t)))
    assert 8 - round(9 / 7.5) == 7 and 255 * (1 - 9 / 30) == pytest.approx(178.5)  # RandAugment m=9: 7 bits, 178.5
    # AutoAugment's 10 bins: torchvision's posterize table is [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert [8 - round(b / (9 / 4)) for b in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]


def test_invert_matches_pillow_exactly(cifar):
    images, pixels = cifar
    assert np.array_equal(ours(pixels, "invert", 0, 1, AUTOAUGMENT).round(3), pillow(images, ImageOps.invert))


def test_autocontrast_and_equalize_match_pillow(cifar):
    images, pixels = cifar
    auto = np.abs(ours(pixels, "autocontrast", 0, 1) - pillow(images, ImageOps.autocontrast))
    assert auto.max() <= 1.0 + 1e-4
    equalized = ours(pixels, "equalize", 0, 1).round(3)
    assert np.array_equal(equalized, pillow(images, ImageOps.equalize))
    # and on low-contrast images, where equalize changes a lot
    dim = [im.point(lambda v: 100 + v // 8) for im in images[:16]]
    dim_pixels = torch.from_numpy(np.stack([np.asarray(im) for im in dim])).permute(0, 3, 1, 2).float() / 255
    assert np.array_equal(ours(dim_pixels, "equalize", 0, 1).round(3), pillow(dim, ImageOps.equalize))
    assert np.abs(ours(dim_pixels, "autocontrast", 0, 1) - pillow(dim, ImageOps.autocontrast)).max() <= 1.0 + 1e-4


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
def test_magnitude_zero_is_the_identity(cifar, space):
    _, pixels = cifar
    expected = pixels.permute(0, 2, 3, 1).numpy() * 255
    for name in OPS:
        for sign in (1, -1):
            out = ours(pixels, name, 0, sign, space)
            if name in ("autocontrast", "equalize"):
                continue  # no magnitude: always applied in full
            if name == "solarize":  # torchvision's bin 0 threshold is 255: only pure white inverts
                white = expected == 255
                assert np.array_equal(out[~white].round(3), expected[~white].round(3))
                assert (out[white] == 0).all()
            else:
                assert np.abs(out - expected).max() < 1e-3, name


def test_enhance_factors_are_symmetric_around_one():
    """kornia's factor 0.1 + 1.8 m / 30 was always < 1: every image darker. Here the mean change is ~0."""
    torch.manual_seed(0)
    n = 4000
    gray = torch.full((n, 3, 8, 8), 0.5)
    gray[:, :, :4] = 0.3  # some contrast to change
    _, bins, sign = random_ops(n, 1, 9, torch.device("cpu"))[0]
    assert 0.45 < (sign > 0).float().mean() < 0.55
    for name in ("brightness", "contrast", "color", "sharpness"):
        out = apply_ops(gray, torch.full((n,), float(OP[name])), bins, sign, RANDAUGMENT)
        change = (out - gray).mean().item()
        assert abs(change) < 0.01, (name, change)
        if name in ("brightness", "contrast"):
            assert (out - gray).abs().mean() > 0.02  # but each image did change


def test_every_image_draws_its_own_ops(cifar):
    """Two copies of one image in a batch get different ops (kornia drew the ops once per batch)."""
    _, pixels = cifar
    copies = pixels[:1].expand(256, -1, -1, -1).contiguous()
    # AutoAugment: fixed bins, so fewer distinct results; both of its ops skipped for 22% of images (1/25 of the sum
    # of (1 - p1)(1 - p2) over its sub-policies).
    for augment, min_distinct, unchanged in ((BatchAutoAugment.randaugment(2, 9), 100, (0.005, 0.3)),
                                             (BatchAutoAugment.trivialaugment(), 100, (0.005, 0.3)),
                                             (BatchAutoAugment.autoaugment(), 40, (0.15, 0.35))):
        torch.manual_seed(0)
        out = augment(copies)
        distinct = torch.unique(out.flatten(1), dim=0).shape[0]
        assert distinct > min_distinct, distinct
        share = (out == copies).flatten(1).all(1).float().mean()
        assert unchanged[0] < share < unchanged[1], share  # some identity draws, not many


def test_op_and_bin_frequencies_are_uniform():
    torch.manual_seed(0)
    n = 14 * 2000
    op, bins, sign = random_ops(n, 1, None, torch.device("cpu"))[0]
    counts = torch.bincount(op.long(), minlength=len(OPS)).float()
    assert (counts / (n / len(OPS))).sub(1).abs().max() < 0.08
    bin_counts = torch.bincount(bins.long(), minlength=NUM_BINS).float()
    assert bin_counts.min() > 0 and (bin_counts / (n / NUM_BINS)).sub(1).abs().max() < 0.15
    _, fixed, _ = random_ops(n, 1, 9, torch.device("cpu"))[0]
    assert (fixed == 9).all()


@pytest.mark.parametrize("augment", [BatchAutoAugment.randaugment(2, 30), BatchAutoAugment.randaugment(3, 9),
                                     BatchAutoAugment.trivialaugment(), BatchAutoAugment.autoaugment()],
                         ids=["ra-2-30", "ra-3-9", "ta", "aa"])
def test_output_stays_in_unit_range(cifar, augment):
    _, pixels = cifar
    torch.manual_seed(0)
    extremes = torch.cat([pixels, torch.rand(64, 3, 32, 32), torch.zeros(4, 3, 32, 32), torch.ones(4, 3, 32, 32)])
    for _ in range(5):
        out = augment(extremes)
        assert out.shape == extremes.shape and out.dtype == extremes.dtype
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_one_channel_images():
    torch.manual_seed(0)
    out = BatchAutoAugment.trivialaugment()(torch.rand(32, 1, 16, 16))
    assert out.shape == (32, 1, 16, 16) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="1 or 3 channels"):
        BatchAutoAugment.trivialaugment()(torch.rand(2, 4, 8, 8))


@pytest.mark.parametrize("augment", [BatchAutoAugment.randaugment(2, 9), BatchAutoAugment.autoaugment()],
                         ids=["ra", "aa"])
def test_same_rng_state_same_augmentation(cifar, augment):
    _, pixels = cifar
    state = torch.get_rng_state()
    first = augment(pixels)
    second = augment(pixels)
    torch.set_rng_state(state)
    assert torch.equal(augment(pixels), first) and not torch.equal(first, second)


def test_autoaugment_draws_each_sub_policy_and_op_with_its_probability():
    """Per round, op o at bin k is drawn with probability sum over the 25 sub-policies of p/25 where the sub-policy has
    (o, p, k) in that round; identity (the op skipped) takes the rest; signs are fair."""
    torch.manual_seed(0)
    n = 25 * 4000
    draws = BatchAutoAugment.autoaugment().draw(n, torch.device("cpu"))  # (2, 3, n)
    assert draws.shape == (2, 3, n)
    for round_ in range(2):
        op, bins, sign = draws[round_]
        expected = {}
        for sub in CIFAR10_POLICY:
            name, p, bin_ = sub[round_]
            key = (OP[name], 0 if bin_ is None else bin_)
            expected[key] = expected.get(key, 0.0) + p / 25
        expected[(OP["identity"], None)] = 1.0 - sum(expected.values())
        applied = op != OP["identity"]
        seen = {(int(o), int(b)) for o, b in torch.stack((op[applied], bins[applied]), 1).unique(dim=0)}
        assert seen == {key for key in expected if key[1] is not None and expected[key] > 0}, round_
        for (o, b), share in expected.items():
            hits = (op == o) if b is None else ((op == o) & (bins == b))
            assert abs(hits.float().mean().item() - share) < 0.006 + 0.05 * share, (round_, o, b)
        assert 0.49 < (sign > 0).float().mean() < 0.51



def test_policy_config():
    assert AugmentArguments().policy == "none"
    legacy = AugmentArguments(randaugment_num_ops=3, randaugment_magnitude=12)  # configs written before `policy`
    assert (legacy.policy, legacy.randaugment_num_ops, legacy.randaugment_magnitude) == ("randaugment", 3, 12)
    assert AugmentArguments(policy="randaugment").randaugment_num_ops == 2  # torchvision's default
    assert AugmentArguments(policy="trivialaugment").randaugment_num_ops == 0
    assert AugmentArguments(randaugment_num_ops=0).policy == "none"
    assert AugmentArguments(policy="autoaugment").randaugment_num_ops == 0
    for bad, match in (({"policy": "augmix"}, "policy.*randaugment, trivialaugment, autoaugment"),
                       ({"policy": "autoaugment", "randaugment_num_ops": 2}, "randaugment_num_ops"),
                       ({"policy": "trivialaugment", "randaugment_num_ops": 2}, "randaugment_num_ops"),
                       ({"policy": "randaugment", "randaugment_num_ops": 0}, "randaugment_num_ops"),
                       ({"randaugment_magnitude": 31}, "randaugment_magnitude.*0..30"),
                       ({"randaugment_magnitude": -1}, "randaugment_magnitude")):
        with pytest.raises(ConfigError, match=match):
            AugmentArguments(**bad)


TORCHVISION_NAMES = {"identity": "Identity", "shear_x": "ShearX", "shear_y": "ShearY", "translate_x": "TranslateX",
                     "translate_y": "TranslateY", "rotate": "Rotate", "brightness": "Brightness", "color": "Color",
                     "contrast": "Contrast", "sharpness": "Sharpness", "posterize": "Posterize", "solarize": "Solarize",
                     "autocontrast": "AutoContrast", "equalize": "Equalize", "invert": "Invert"}


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_matches_torchvision_itself(cifar, policy):
    """Where torchvision imports (not beside this project's torch; it does on the GPU machine): torchvision's own
    `_apply_op` on uint8 tensors, with its own magnitude tables. Geometric ops: torchvision's nearest grid_sample
    rounds ties to even where we (and Pillow) floor: <= 3% of pixels. Enhance ops: torchvision truncates to uint8
    twice (its degenerate image, then the blend): <= 2 levels, mean <= 1 (measured on an H100 machine with
    torchvision 0.26: color at TrivialAugment bin 17, factor 0.44: max 1.55, mean 0.75)."""
    tv = pytest.importorskip("torchvision")
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.autoaugment import _apply_op

    _, pixels = cifar
    uint8 = (pixels * 255).round().to(torch.uint8)
    names = OPS
    if policy == "randaugment":
        space, table, bins = RANDAUGMENT, tv.transforms.RandAugment()._augmentation_space(NUM_BINS, [32, 32]), (9,)
    elif policy == "autoaugment":
        autoaugment = tv.transforms.AutoAugment(tv.transforms.AutoAugmentPolicy.CIFAR10)
        space, table, bins = AUTOAUGMENT, autoaugment._augmentation_space(10, [32, 32]), (2, 7, 9)
        names = (*OPS, "invert")
        ours_policy = [tuple((TORCHVISION_NAMES[n], p, b) for n, p, b in sub) for sub in CIFAR10_POLICY]
        assert ours_policy == [tuple(sub) for sub in autoaugment.policies]
    else:
        space, table, bins = TRIVIALAUGMENT_WIDE, tv.transforms.TrivialAugmentWide()._augmentation_space(NUM_BINS), (
            4, 17, 30)
    mismatches = []
    for name in names:
        magnitudes, signed = table[TORCHVISION_NAMES[name]]
        for bin_ in bins:
            for sign in ((1, -1) if signed else (1,)):
                magnitude = float(magnitudes[bin_]) * sign if magnitudes.ndim else 0.0
                reference = _apply_op(uint8, TORCHVISION_NAMES[name], magnitude, InterpolationMode.NEAREST, None)
                reference = reference.permute(0, 2, 3, 1).numpy().astype(np.float64)
                diff = np.abs(ours(pixels, name, bin_, sign, space) - reference)
                if name in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
                    ok = (diff > 0).mean() <= 0.03
                elif name in ("posterize", "solarize", "equalize", "identity", "invert"):
                    ok = diff.max() < 1e-3
                else:  # torchvision truncates its gray/mean/blur and its blend to uint8: two biases of < 1 level
                    ok = diff.max() <= 2.0 and diff.mean() <= 1.0
                if not ok:
                    mismatches.append((name, bin_, sign, round(float(diff.max()), 3), round(float(diff.mean()), 3),
                                       round(float((diff > 0).mean()), 4)))
    assert not mismatches, mismatches  # (op, bin, sign, max, mean, share of pixels that differ)
