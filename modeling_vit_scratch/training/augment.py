"""Batch augmentation and normalisation on the training device.

`BatchAugment` turns a batch of uint8 images (B, C, H, W) into normalised float32 pixel values, with the
augmentations of `AugmentArguments`, in this order:

    uint8 -> float [0, 1] -> random crop (reflect padding) + horizontal flip -> RandAugment -> normalise
    -> random erasing (fill 0, i.e. the mean colour) -> mixup / cutmix -> soft labels (+ label smoothing)

Every op works on the whole batch with tensor ops on the images' device: no per-image Python loop, no PIL, no
host<->device sync. All randomness comes from torch's global generators (device draws on the device's generator,
per-batch decisions on the CPU generator), which the HF Trainer saves in each checkpoint, so a resumed run
replays exactly the augmentations it would have seen.

Library choices (bench/augment.py, CPU, 1 thread, batch 128, ms per call; model step ~800 ms):
- crop + flip: hand-written, one `gather` from the reflect-padded batch reads each image's random window,
  mirrored or not (0.9 ms). kornia's RandomCrop is 2-3x slower (2.3 ms) and reads its crop boxes back to the
  host (`.cpu().tolist()`: a device sync per call); its flip (0.65 ms) is no faster than a `where` (0.47 ms).
- RandAugment: kornia's (3.1 ms for n=2): the 14 PIL-style ops of RandAugment plus SolarizeAdd, magnitude
  m/30 of each op's range, random sign per image, each chosen op always applied. NOTE it draws the n ops once
  per *batch* (each image still gets its own magnitude sign); applying it per 16-image chunk costs 4x as much.
- random erasing: hand-written box mask + `masked_fill` (0.95 ms vs kornia's 1.2 ms, fewer kernels, and the
  log-uniform aspect ratio of torchvision/timm).
- mixup / cutmix: hand-written, timm style (partner = the batch reversed, one lambda per batch).
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.augmentation.auto import RandAugment
from torch import nn

from .config import AugmentArguments

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
    erased (as in kornia).
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


def sample_beta(alpha: float) -> float:
    """One Beta(alpha, alpha) draw from torch's CPU generator (a CPU op: no device sync)."""
    concentration = torch.tensor(float(alpha), dtype=torch.float64)
    return torch.distributions.Beta(concentration, concentration).sample().item()


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int, float]:
    """timm's cutmix box for mixing ratio `lam`: (top, bottom, left, right, lam corrected by the box's area).

    The box has sides sqrt(1 - lam) * (H, W) around a uniform random centre, clipped to the image.
    """
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = torch.randint(height, ()).item(), torch.randint(width, ()).item()
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right, 1.0 - (bottom - top) * (right - left) / (height * width)


class BatchAugment(nn.Module):
    """Training-time augmentation + normalisation of uint8 batches; `normalize` is the evaluation path.

    Args:
        args: which augmentations, see `AugmentArguments`.
        mean, std: per-channel statistics of the [0, 1] pixel values.
        num_classes: K, the width of soft labels.
        label_smoothing: eps; targets become one_hot * (1 - eps) + eps / K (before mixing).

    Labels come back as int64 (B,) when neither mixup/cutmix nor label smoothing is configured, else as float32
    (B, K) probabilities, for every batch (also those that `mix_prob` leaves unmixed), so the dtype is fixed per run.
    Move the module to the training device (`.to(device)`) so that kornia draws its parameters there too.
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
        n, m = args.randaugment_num_ops, args.randaugment_magnitude
        self.randaugment = RandAugment(n=n, m=m) if n > 0 else None
        self.mix_modes = [mode for mode, alpha in (("mixup", args.mixup_alpha), ("cutmix", args.cutmix_alpha))
                          if alpha > 0]
        self.soft_labels = bool(self.mix_modes and args.mix_prob > 0) or self.label_smoothing > 0

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
        if self.randaugment is not None:
            x = self.randaugment(x)  # stays in [0, 1]
        x = self._normalize(x)
        if args.random_erasing_prob > 0:
            x = random_erasing(x, args.random_erasing_prob)  # fill 0 = the mean colour, as torchvision's default
        if not self.soft_labels:
            return x, labels
        eps = self.label_smoothing
        targets = F.one_hot(labels, self.num_classes).float() * (1.0 - eps) + eps / self.num_classes  # (B, K)
        # Per-batch decisions come from the CPU generator: `.item()` on a CPU tensor is no device sync.
        if self.mix_modes and torch.rand(()).item() < args.mix_prob:
            mode = self.mix_modes[torch.randint(len(self.mix_modes), ()).item()]
            lam = sample_beta(args.mixup_alpha if mode == "mixup" else args.cutmix_alpha)
            if mode == "mixup":
                x = lam * x + (1.0 - lam) * x.flip(0)  # partner of image i: image B-1-i
            else:
                top, bottom, left, right, lam = cutmix_box(x.shape[-2], x.shape[-1], lam)
                # x is this call's own tensor (made by _normalize / erasing), so pasting in place is safe.
                x[:, :, top:bottom, left:right] = x.flip(0)[:, :, top:bottom, left:right]
            targets = lam * targets + (1.0 - lam) * targets.flip(0)
        return x, targets
