"""Batch augmentation and normalisation on the training device.

`BatchAugment` turns a batch of uint8 images (B, C, H, W) into normalised float32 pixel values, with the
augmentations of `AugmentArguments`, in this order:

    uint8 -> float [0, 1] -> random crop (reflect padding) + horizontal flip -> RandAugment, TrivialAugment or
    AutoAugment (per image, `autoaugment.py`) -> normalise -> random erasing (fill 0, i.e. the mean colour)
    -> mixup / cutmix -> soft labels (+ label smoothing)

Every op works on the whole batch with tensor ops on the images' device: no per-image Python loop, no PIL, no
host<->device sync. All randomness comes from the generator of the images' device, which the HF Trainer saves in
each checkpoint, so a resumed run replays exactly the augmentations it would have seen.

Every op is hand-written rather than taken from kornia; why, with the timings, is in bench/augment.py.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vit_scratch.autoaugment import BatchAutoAugment
from vit_scratch.config.schema import AugmentArguments

ERASE_SCALE = (0.02, 1 / 3)  # erased area as a fraction of the image (torchvision's RandomErasing default)
ERASE_LOG_RATIO = (math.log(0.3), math.log(3.3))  # log of the box's height/width


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Per image: reflect-pad by `padding`, take a random H x W window, mirror it left-right with p=0.5.

    images: float (B, C, H, W) -> (B, C, H, W). One gather does crop and flip together (a flipped window is the
    window read right to left), so the batch is copied once.
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4, mode="reflect") if padding else images  # (B, C, H+2p, W+2p)
    offset_y = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=device)
    offset_x = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=device)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w).expand(b, 1, w)  # (B, 1, W)
    if flip:
        cols = torch.where(torch.rand(b, 1, 1, device=device) < 0.5, cols.flip(-1), cols)
    index = (offset_y + rows) * padded.shape[-1] + offset_x + cols  # (B, H, W) flat index into the padded image
    index = index.view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, index).view(b, c, h, w)


def random_erasing(images: torch.Tensor, prob: float, value: float = 0.0) -> torch.Tensor:
    """With probability `prob` per image, fill one random rectangle with `value` (torchvision-style box).

    images: (B, C, H, W) -> (B, C, H, W). Area fraction ~ U(0.02, 1/3), log aspect ratio ~ U(log 0.3, log 3.3);
    the box side lengths are clamped to the image instead of torchvision's retries, so a chosen image is always
    erased.
    """
    b, _, h, w = images.shape
    device = images.device
    area = h * w * torch.empty(b, device=device).uniform_(*ERASE_SCALE)
    ratio = torch.exp(torch.empty(b, device=device).uniform_(*ERASE_LOG_RATIO))
    box_h = torch.sqrt(area * ratio).round().clamp(1, h)  # (B,)
    box_w = torch.sqrt(area / ratio).round().clamp(1, w)
    top = (torch.rand(b, device=device) * (h - box_h + 1)).floor()
    left = (torch.rand(b, device=device) * (w - box_w + 1)).floor()
    chosen = torch.rand(b, device=device) < prob
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    top, left, box_h, box_w, chosen = (t.view(b, 1, 1) for t in (top, left, box_h, box_w, chosen))
    mask = chosen & (ys >= top) & (ys < top + box_h) & (xs >= left) & (xs < left + box_w)  # (B, H, W)
    return images.masked_fill(mask.unsqueeze(1), value)


def mix_batch(images: torch.Tensor, targets: torch.Tensor, mixup_alpha: float, cutmix_alpha: float,
              mix_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """timm-style batch mixing, every decision drawn on the images' device (no host sync, static shapes).

    With probability `mix_prob` the batch is mixed with its reverse (image i with image B-1-i): by mixup
    (lam * x + (1 - lam) * partner) or cutmix (a box of area ~(1 - lam) pasted from the partner, lam then corrected
    to the box's real area, timm's box: sides sqrt(1 - lam) * (H, W) around a uniform centre, clipped), one of the
    two at random when both alphas are > 0; lam ~ Beta(alpha, alpha). Targets (B, K) mix with the same lam.
    Both candidates are computed and one is selected, so the work and the kernels are the same for every batch.
    """
    b, _, h, w = images.shape
    device = images.device
    u = torch.rand(4, device=device)  # mix at all?, which mode, box centre row, column
    # Beta(a, a) = G1 / (G1 + G2) with G ~ Gamma(a, 1). Every tensor is made on the device by a kernel: a
    # torch.tensor(python values, device=cuda) would be a blocking copy from the host, i.e. a sync.
    alphas = torch.cat([torch.full((2,), mixup_alpha or 1.0, device=device),
                        torch.full((2,), cutmix_alpha or 1.0, device=device)])
    g = torch.distributions.Gamma(alphas, torch.ones_like(alphas), validate_args=False).sample()
    lam_mixup, lam_cutmix = g[0] / (g[0] + g[1]), g[2] / (g[2] + g[3])
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = u[1] < 0.5
    else:
        use_cutmix = torch.full((), cutmix_alpha > 0, device=device)
    partner = images.flip(0)

    cut = torch.sqrt(1.0 - lam_cutmix)
    cut_h, cut_w = torch.floor(h * cut), torch.floor(w * cut)
    cy, cx = torch.floor(u[2] * h), torch.floor(u[3] * w)
    top, bottom = (cy - torch.floor(cut_h / 2)).clamp(min=0), (cy + torch.floor(cut_h / 2)).clamp(max=h)
    left, right = (cx - torch.floor(cut_w / 2)).clamp(min=0), (cx + torch.floor(cut_w / 2)).clamp(max=w)
    ys = torch.arange(h, device=device).view(h, 1)
    xs = torch.arange(w, device=device).view(1, w)
    box = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)  # (H, W)
    lam_box = 1.0 - (bottom - top) * (right - left) / (h * w)

    mixed = u[0] < mix_prob
    lam = torch.where(mixed, torch.where(use_cutmix, lam_box, lam_mixup), 1.0)
    cutmixed = torch.where(box, partner, images)
    mixed_up = lam_mixup * images + (1.0 - lam_mixup) * partner
    images = torch.where(mixed, torch.where(use_cutmix, cutmixed, mixed_up), images)
    return images, lam * targets + (1.0 - lam) * targets.flip(0)


class BatchAugment(nn.Module):
    """Training-time augmentation + normalisation of uint8 batches; `normalize` is the evaluation path.

    Args:
        args: which augmentations, see `AugmentArguments`.
        mean, std: per-channel statistics of the [0, 1] pixel values.
        num_classes: K, the width of soft labels.
        label_smoothing: eps; targets become one_hot * (1 - eps) + eps / K (before mixing).

    Labels come back as int64 (B,) when neither mixup/cutmix nor label smoothing is configured, else as float32
    (B, K) probabilities, for every batch (also those that `mix_prob` leaves unmixed), so the dtype is fixed per run.
    """

    def __init__(self, args: AugmentArguments, mean: Sequence[float], std: Sequence[float], num_classes: int,
                 label_smoothing: float = 0.0):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.args = args
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.autoaugment = {
            "none": None,
            "randaugment": BatchAutoAugment.randaugment(args.randaugment_num_ops, args.randaugment_magnitude),
            "trivialaugment": BatchAutoAugment.trivialaugment(),
            "autoaugment": BatchAutoAugment.autoaugment(),
        }[args.policy]
        self.mixing = (args.mixup_alpha > 0 or args.cutmix_alpha > 0) and args.mix_prob > 0
        self.soft_labels = self.mixing or self.label_smoothing > 0

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation: uint8 (B, C, H, W) -> float32 (B, C, H, W), (x / 255 - mean) / std; no augmentation."""
        return self._normalize(images.float() / 255.0)

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: uint8 images (B, C, H, W), int64 labels (B,) -> (pixel_values float32 (B, C, H, W), labels).

        labels: int64 (B,), or float32 (B, K) rows summing to 1 when mixing or label smoothing is configured.
        """
        args = self.args
        x = images.float() / 255.0  # (B, C, H, W) in [0, 1]
        if args.random_crop_padding or args.horizontal_flip:
            x = random_crop_flip(x, args.random_crop_padding, args.horizontal_flip)
        if self.autoaugment is not None:
            x = self.autoaugment(x)  # per image; stays in [0, 1]
        x = self._normalize(x)
        if args.random_erasing_prob > 0:
            x = random_erasing(x, args.random_erasing_prob)  # fill 0 = the mean colour, as torchvision's default
        if not self.soft_labels:
            return x, labels
        eps = self.label_smoothing
        targets = F.one_hot(labels, self.num_classes).float() * (1.0 - eps) + eps / self.num_classes  # (B, K)
        if self.mixing:
            x, targets = mix_batch(x, targets, args.mixup_alpha, args.cutmix_alpha, args.mix_prob)
        return x, targets
