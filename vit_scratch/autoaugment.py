"""RandAugment, TrivialAugmentWide and AutoAugment (CIFAR-10 policy) with torchvision's semantics, per image, batched.

torchvision (`transforms/autoaugment.py`) augments one PIL image or uint8 tensor at a time. Here every image of a
(B, C, H, W) float batch in [0, 1] draws its own op, its own magnitude sign (and, for TrivialAugment, its own
magnitude bin; for AutoAugment, its own sub-policy and whether each of its two ops applies) in each round, and each
op is computed with whole-batch tensor ops: one nearest-neighbour gather for the geometric ops (identity matrix for
the others), one blend for the four enhance ops (each image blends with its own op's "degenerate" image), then
posterize / solarize / autocontrast / equalize / invert for all and a per-image select.
No Python loop over images, no host<->device sync, static shapes; all randomness is one `torch.rand` per round on
the images' device, so torch's RNG state (what the Trainer checkpoints) decides the augmentation.

The 14 ops of RandAugment's and TrivialAugment's pool and their magnitudes (31 bins; bin k is the fraction k/30 of
the range). AutoAugment uses RandAugment's ranges on 10 bins (bin k is k/9 of the range) plus Invert, and draws
one of the 25 sub-policies that torchvision's `AutoAugmentPolicy.CIFAR10` lists (each two ops, each applied with its
own probability at a fixed bin):

    op            RandAugment(n, m)             TrivialAugmentWide (bin drawn per image)
    Identity      -                             -
    ShearX/Y      +-0.3 * m/30                  +-0.99 * k/30          (about the top-left corner, as torchvision)
    TranslateX/Y  +-int(150/331 * side * m/30)  +-int(32 * k/30) px    (whole pixels, truncated as torchvision)
    Rotate        +-30 * m/30 degrees           +-135 * k/30 degrees   (about the centre, counter-clockwise)
    Brightness, Color, Contrast, Sharpness
                  factor 1 +- 0.9 * m/30        factor 1 +- 0.99 * k/30
    Posterize     8 - round(m / 7.5) bits       8 - round(k / 5) bits
    Solarize      invert levels >= 255 (1 - m/30)  (same, with k)
    AutoContrast, Equalize: no magnitude

Pixels the geometric ops bring in from outside the image are 0 (torchvision's default fill); interpolation is
nearest (torchvision's default). Where torchvision rounds to uint8 between ops, this keeps floats; ops defined on
the 256 levels (posterize, solarize, equalize) read `round(255 x)`. Checked against Pillow in tests/test_autoaugment.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# RandAugment's and TrivialAugment's pool, in torchvision's order; AutoAugment's policies also use "invert".
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
       "sharpness", "posterize", "solarize", "autocontrast", "equalize")
OP = {name: i for i, name in enumerate((*OPS, "invert"))}
NUM_BINS = 31  # magnitude bins 0..30, as torchvision's default num_magnitude_bins (AutoAugment: 10)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)


@dataclass(frozen=True)
class AugmentSpace:
    """The largest magnitude of each op (at bin 30); signed ops get a random sign per image."""

    shear: float
    translate: float  # pixels; a fraction of the side when `translate_relative`
    translate_relative: bool
    rotate: float  # degrees
    enhance: float  # brightness/color/contrast/sharpness factor 1 +- this
    posterize_bits_off: int  # bits removed at the top bin (8 -> 8 - this)
    num_bins: int = NUM_BINS  # bin k is the fraction k / (num_bins - 1) of each range


RANDAUGMENT = AugmentSpace(shear=0.3, translate=150 / 331, translate_relative=True, rotate=30.0, enhance=0.9,
                           posterize_bits_off=4)
TRIVIALAUGMENT_WIDE = AugmentSpace(shear=0.99, translate=32.0, translate_relative=False, rotate=135.0, enhance=0.99,
                                   posterize_bits_off=6)
AUTOAUGMENT = AugmentSpace(shear=0.3, translate=150 / 331, translate_relative=True, rotate=30.0, enhance=0.9,
                           posterize_bits_off=4, num_bins=10)

# torchvision's AutoAugmentPolicy.CIFAR10: 25 sub-policies of two (op, probability, magnitude bin 0..9 or None).
CIFAR10_POLICY = (
    (("invert", 0.1, None), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, None), ("equalize", 0.9, None)),
    (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, None), ("equalize", 0.5, None)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)),
    (("equalize", 0.3, None), ("autocontrast", 0.4, None)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, None)),
    (("equalize", 0.2, None), ("autocontrast", 0.6, None)),
    (("equalize", 0.2, None), ("equalize", 0.6, None)),
    (("color", 0.9, 9), ("equalize", 0.6, None)),
    (("autocontrast", 0.8, None), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, None)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, None), ("solarize", 0.8, 3)),
    (("equalize", 0.8, None), ("invert", 0.1, None)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, None)),
)


def random_ops(batch: int, num_ops: int, magnitude: int | None, device: torch.device) -> torch.Tensor:
    """Per image and round: (op index, magnitude bin, sign) as float (num_ops, 3, B), from one `torch.rand`.

    magnitude: the bin of every image (RandAugment), or None for a uniform bin per image (TrivialAugment).
    """
    u = torch.rand(num_ops, 3, batch, device=device)
    op = (u[:, 0] * len(OPS)).floor().clamp_(max=len(OPS) - 1)
    bins = (u[:, 1] * NUM_BINS).floor().clamp_(max=NUM_BINS - 1) if magnitude is None else torch.full_like(
        u[:, 1], float(magnitude))
    sign = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
    return torch.stack((op, bins, sign), dim=1)


def policy_ops(batch: int, table: torch.Tensor) -> torch.Tensor:
    """AutoAugment: per image a uniform sub-policy of `table`, then per round its op (identity unless a uniform draw
    is <= the op's probability, as torchvision's `probs[i] <= p`), its bin and a random sign; from one `torch.rand`.

    table: float (P, 2, 3) of (op index, probability, bin) -> float (2, 3, B), laid out as `random_ops`'.
    """
    u = torch.rand(5, batch, device=table.device)  # sub-policy, applied? x 2, sign x 2
    rows = table[(u[0] * len(table)).floor().clamp_(max=len(table) - 1).long()]  # (B, 2, 3)
    op = torch.where(u[1:3] <= rows[:, :, 1].T, rows[:, :, 0].T, float(OP["identity"]))  # (2, B)
    sign = torch.where(u[3:5] < 0.5, -1.0, 1.0)
    return torch.stack((op, rows[:, :, 2].T, sign), dim=1)


def apply_ops(images: torch.Tensor, op: torch.Tensor, bins: torch.Tensor, sign: torch.Tensor,
              space: AugmentSpace) -> torch.Tensor:
    """One round: image i gets op `OP[op[i]]` at magnitude bin `bins[i]` with sign `sign[i]` (+-1).

    images: float (B, C, H, W) in [0, 1], C = 1 or 3; op, bins, sign: float (B,) -> (B, C, H, W) in [0, 1].
    """
    level = bins / (space.num_bins - 1)  # (B,) the fraction of each op's range
    signed = level * sign

    x = _geometric(images, op, signed, space)
    factor = 1.0 + space.enhance * signed
    out = torch.where(_is(op, "brightness", "color", "contrast", "sharpness"),
                      _blend(x, _degenerate(x, op), factor), x)
    levels = x * 255.0
    step = torch.exp2(torch.round(bins / ((space.num_bins - 1) / space.posterize_bits_off)))  # 2^(bits removed)
    out = torch.where(_is(op, "posterize"), torch.floor(levels.round() / _per_image(step)) * _per_image(step) / 255.0,
                      out)
    threshold = 255.0 * (1.0 - level)  # torchvision: linspace(255, 0, num_bins)
    out = torch.where(_is(op, "solarize") & (levels + 1e-3 >= _per_image(threshold)), 1.0 - x, out)
    out = torch.where(_is(op, "autocontrast"), autocontrast(x), out)
    out = torch.where(_is(op, "equalize"), equalize(x), out)
    return torch.where(_is(op, "invert"), 1.0 - x, out)


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _is(op: torch.Tensor, *names: str) -> torch.Tensor:
    """(B, 1, 1, 1) bool: does image i's op have one of these names?"""
    mask = op == OP[names[0]]
    for name in names[1:]:
        mask = mask | (op == OP[name])
    return _per_image(mask)


def _geometric(images: torch.Tensor, op: torch.Tensor, signed: torch.Tensor, space: AugmentSpace) -> torch.Tensor:
    """Shear/translate/rotate each image by its own affine map (identity for the other ops), nearest, fill 0.

    Output pixel centre p (pixel units, origin at the image centre) reads input point A p + t, as torchvision's
    inverse affine grid; the pixel read is floor(A p + t + side / 2), and pixels outside the input are 0.
    """
    b, c, h, w = images.shape
    device = images.device
    shear = space.shear * signed
    side = torch.where(op == OP["translate_x"], float(w), float(h))
    pixels = space.translate * (side if space.translate_relative else 1.0) * signed
    shift = torch.trunc(pixels)  # torchvision: translate=[int(magnitude), 0]
    angle = torch.deg2rad(space.rotate * signed)
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(signed), torch.zeros_like(signed)

    is_ = {name: op == OP[name] for name in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")}
    # A = [[a, b], [c, d]], t = (tx, ty), per image (B,)
    a = torch.where(is_["rotate"], cos, one)
    d = a
    bb = torch.where(is_["shear_x"], shear, torch.where(is_["rotate"], -sin, zero))
    cc = torch.where(is_["shear_y"], shear, torch.where(is_["rotate"], sin, zero))
    # Shears are about the top-left corner (torchvision passes center=[0, 0]): x_in = x + s (y + H/2).
    tx = torch.where(is_["shear_x"], shear * h / 2, torch.where(is_["translate_x"], -shift, zero))
    ty = torch.where(is_["shear_y"], shear * w / 2, torch.where(is_["translate_y"], -shift, zero))

    ys = (torch.arange(h, device=device, dtype=images.dtype) + 0.5 - h / 2).view(1, h, 1)  # (1, H, 1)
    xs = (torch.arange(w, device=device, dtype=images.dtype) + 0.5 - w / 2).view(1, 1, w)  # (1, 1, W)
    a, bb, cc, d, tx, ty = (v.view(b, 1, 1) for v in (a, bb, cc, d, tx, ty))
    col = torch.floor(a * xs + bb * ys + tx + w / 2)  # (B, H, W)
    row = torch.floor(cc * xs + d * ys + ty + h / 2)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    index = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).long().view(b, 1, h * w).expand(b, c, h * w)
    moved = images.flatten(2).gather(2, index).view(b, c, h, w)
    return moved * inside.unsqueeze(1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma; a 1-channel batch is its own grayscale."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def smooth(images: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (torchvision's sharpness degenerate): 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 inside,
    the border pixels unchanged. The 3x3 sum is two shifted-slice sums (on CPU 10x faster than a depthwise conv)."""
    rows = images[..., :-2, :] + images[..., 1:-1, :] + images[..., 2:, :]  # (B, C, H-2, W)
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # (B, C, H-2, W-2)
    inner = (box + 4.0 * images[..., 1:-1, 1:-1]) / 13.0
    return F.pad(inner - images[..., 1:-1, 1:-1], (1, 1, 1, 1)) + images


def _degenerate(images: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """What each enhance op blends with: black (brightness), gray (color), mean gray (contrast), smooth (sharpness)."""
    gray = grayscale(images)  # (B, 1, H, W)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = torch.where(_is(op, "color"), gray, torch.zeros_like(images))
    out = torch.where(_is(op, "contrast"), mean, out)
    return torch.where(_is(op, "sharpness"), smooth(images), out)


def _blend(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend: factor * image + (1 - factor) * degenerate, clamped to [0, 1]."""
    factor = _per_image(factor)
    return (factor * images + (1.0 - factor) * degenerate).clamp(0.0, 1.0)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to [0, 1] (a constant channel stays as it is)."""
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    span = high - low
    stretched = ((images - low) / span.clamp_min(1e-12)).clamp(0.0, 1.0)
    return torch.where(span > 0, stretched, images)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """PIL's (and torchvision's) histogram equalisation, per channel of each image, on the 256 levels.

    lut[i] = (step // 2 + (pixels below level i)) // step with step = (pixels - pixels of the top level) // 255;
    a channel with step 0 (nearly constant) is left as it is.
    """
    b, c, h, w = images.shape
    levels = (images * 255.0).round().clamp(0, 255).long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=images.device, dtype=images.dtype).scatter_add_(
        1, levels, torch.ones_like(levels, dtype=images.dtype))  # (B*C, 256)
    top_count = hist.gather(1, levels.amax(dim=1, keepdim=True))  # pixels at the highest level present
    step = torch.div(h * w - top_count, 255, rounding_mode="floor")  # (B*C, 1)
    below = hist.cumsum(dim=1) - hist  # pixels strictly below each level
    lut = torch.div(below + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor")
    equalized = lut.clamp(0, 255).gather(1, levels) / 255.0
    return torch.where(step > 0, equalized, images.view(b * c, h * w)).view(b, c, h, w)


class BatchAutoAugment(torch.nn.Module):
    """RandAugment(num_ops, magnitude), TrivialAugmentWide (num_ops=1, magnitude=None) or AutoAugment (a policy
    table), per image.

    forward: float (B, C, H, W) in [0, 1], C = 1 or 3 -> the same shape, in [0, 1].
    """

    def __init__(self, space: AugmentSpace, num_ops: int, magnitude: int | None, policy=None):
        super().__init__()
        if magnitude is not None and not 0 <= magnitude < space.num_bins:
            raise ValueError(f"magnitude must be a bin in 0..{space.num_bins - 1}, got {magnitude}")
        self.space, self.num_ops, self.magnitude = space, num_ops, magnitude
        table = [[(OP[name], p, 0 if bin_ is None else bin_) for name, p, bin_ in sub] for sub in policy or ()]
        # On the device with the module (moved once by .to()): a table made per call would be a host copy per step.
        self.register_buffer("policy", torch.tensor(table, dtype=torch.float32) if policy else None, persistent=False)

    @classmethod
    def randaugment(cls, num_ops: int = 2, magnitude: int = 9) -> "BatchAutoAugment":
        return cls(RANDAUGMENT, num_ops, magnitude)

    @classmethod
    def trivialaugment(cls) -> "BatchAutoAugment":
        return cls(TRIVIALAUGMENT_WIDE, 1, None)

    @classmethod
    def autoaugment(cls) -> "BatchAutoAugment":
        """torchvision's AutoAugment(AutoAugmentPolicy.CIFAR10)."""
        return cls(AUTOAUGMENT, 2, None, CIFAR10_POLICY)

    def draw(self, batch: int, device: torch.device) -> torch.Tensor:
        """Every image's (op, bin, sign) in each round: float (num_ops, 3, B)."""
        if self.policy is not None:
            return policy_ops(batch, self.policy)
        return random_ops(batch, self.num_ops, self.magnitude, device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] not in (1, 3):
            raise ValueError(f"RandAugment/TrivialAugment/AutoAugment need 1 or 3 channels, got {images.shape[1]}")
        for op, bins, sign in self.draw(images.shape[0], images.device).unbind(0):
            images = apply_ops(images, op, bins, sign, self.space)
        return images

    def extra_repr(self) -> str:
        kind = f"magnitude={self.magnitude}" if self.policy is None else f"policy of {len(self.policy)} sub-policies"
        return f"num_ops={self.num_ops}, {kind}, space={self.space}"
