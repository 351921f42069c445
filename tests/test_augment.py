"""BatchAugment: shapes, each op's exact effect, soft labels, and RNG determinism (CPU; one CUDA test if present)."""


import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vit_scratch.augment import BatchAugment, random_crop_flip
from vit_scratch.config.schema import AugmentArguments

from .helpers import run_as_main

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
K = 10
OFF = dict(random_crop_padding=0, horizontal_flip=False, randaugment_num_ops=0, mixup_alpha=0.0, cutmix_alpha=0.0,
           random_erasing_prob=0.0)
ALL_ON = dict(random_crop_padding=4, horizontal_flip=True, randaugment_num_ops=2, randaugment_magnitude=9,
              mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, random_erasing_prob=0.5)


def make(mean=MEAN, std=STD, num_classes=K, label_smoothing=0.0, **options) -> BatchAugment:
    return BatchAugment(AugmentArguments(**{**OFF, **options}), mean, std, num_classes, label_smoothing)


def batch(b=32, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, K, (b,), generator=g)


def index_images(b=32, size=32):
    """Image i is the constant value i: after mixing, a pixel tells which source image it came from."""
    return torch.arange(b, dtype=torch.uint8).view(b, 1, 1, 1).expand(b, 3, size, size).contiguous()


def test_normalize_matches_formula():
    images, _ = batch()
    expected = (images.double() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    out = make().normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=1e-6)


def test_all_off_equals_normalize():
    aug = make()
    images, labels = batch()
    pixels, out_labels = aug(images, labels)
    assert torch.equal(pixels, aug.normalize(images))
    assert out_labels.dtype == torch.int64 and torch.equal(out_labels, labels)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_all_on_shapes_dtypes_device(smoothing):
    torch.manual_seed(0)
    images, labels = batch()
    pixels, targets = make(label_smoothing=smoothing, **ALL_ON)(images, labels)
    assert pixels.shape == images.shape and pixels.dtype == torch.float32 and pixels.device == images.device
    assert targets.shape == (32, K) and targets.dtype == torch.float32 and targets.device == labels.device
    assert torch.isfinite(pixels).all()
    torch.testing.assert_close(targets.sum(1), torch.ones(32))


def test_crop_is_a_window_of_the_reflect_padded_image():
    torch.manual_seed(0)
    p, aug = 4, make(random_crop_padding=4)
    images, labels = batch(b=64)
    pixels, _ = aug(images, labels)
    padded = aug._normalize(F.pad(images.float() / 255, (p,) * 4, mode="reflect"))  # (B, C, 40, 40)
    offsets = set()
    for i in range(0, 64, 4):
        found = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 if torch.equal(pixels[i], padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert len(found) == 1, f"image {i}: {found}"
        offsets.add(found[0])
    assert len(offsets) >= 6  # per-image offsets, not one for the batch


def test_flip_about_half_exact_mirrors():
    torch.manual_seed(0)
    aug = make(horizontal_flip=True)
    images, labels = batch(b=400)
    pixels, _ = aug(images, labels)
    plain = aug.normalize(images)
    flipped = torch.tensor([torch.equal(o, x.flip(-1)) for o, x in zip(pixels, plain, strict=True)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(pixels, plain, strict=True)])
    assert (flipped ^ kept).all()
    assert 150 < flipped.sum() < 250


def test_crop_and_flip_together_match_crop_then_mirror():
    images = torch.rand(16, 3, 8, 8)
    torch.manual_seed(3)
    both = random_crop_flip(images, 2, True)
    torch.manual_seed(3)
    crop_only = random_crop_flip(images, 2, False)  # same offsets: the flip draw comes after them
    for out, crop in zip(both, crop_only, strict=True):
        assert torch.equal(out, crop) or torch.equal(out, crop.flip(-1))


def test_label_smoothing_only():
    eps, aug = 0.1, make(label_smoothing=0.1)
    images, labels = batch()
    pixels, targets = aug(images, labels)
    assert torch.equal(pixels, aug.normalize(images))
    torch.testing.assert_close(targets, F.one_hot(labels, K).float() * (1 - eps) + eps / K)


def test_mix_prob_zero_is_mixing_off():
    aug = make(mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.0)
    images, labels = batch()
    pixels, out_labels = aug(images, labels)
    assert torch.equal(pixels, aug.normalize(images)) and torch.equal(out_labels, labels)


def test_unmixed_batches_still_get_soft_labels():
    aug = make(mixup_alpha=1.0, mix_prob=0.5)  # the label dtype is fixed per run, not per batch
    images, labels = batch()
    torch.manual_seed(0)
    outputs = [aug(images, labels) for _ in range(20)]
    unmixed = [t for p, t in outputs if torch.equal(p, aug.normalize(images))]
    assert 3 <= len(unmixed) <= 17
    assert all(torch.equal(t, F.one_hot(labels, K).float()) for t in unmixed)


def test_mixup_pixels_and_labels_agree():
    b = 16
    aug = make(mean=(0, 0, 0), std=(1, 1, 1), num_classes=b, mixup_alpha=1.0)
    images, labels = index_images(b), torch.arange(b)
    for seed in range(5):
        torch.manual_seed(seed)
        pixels, targets = aug(images, labels)
        assert targets.shape == (b, b)
        torch.testing.assert_close(targets.sum(1), torch.ones(b))
        lam = targets[0, 0]
        torch.testing.assert_close(targets.diagonal(), torch.full((b,), lam.item()))
        torch.testing.assert_close(targets.flip(1).diagonal(), torch.full((b,), 1 - lam.item()))
        expected = lam * images.float() / 255 + (1 - lam) * images.flip(0).float() / 255
        torch.testing.assert_close(pixels, expected)


def test_cutmix_label_weights_equal_pixel_area():
    b = 16
    aug = make(mean=(0, 0, 0), std=(1, 1, 1), num_classes=b, cutmix_alpha=1.0)
    images, labels = index_images(b), torch.arange(b)
    partial = 0
    for seed in range(10):
        torch.manual_seed(seed)
        pixels, targets = aug(images, labels)
        torch.testing.assert_close(targets.sum(1), torch.ones(b))
        own = (pixels * 255).round() == torch.arange(b).view(b, 1, 1, 1)
        other = (pixels * 255).round() == torch.arange(b).flip(0).view(b, 1, 1, 1)
        assert (own | other).all()
        own_area = own.float().mean((1, 2, 3))
        torch.testing.assert_close(targets.diagonal(), own_area)
        torch.testing.assert_close(targets.flip(1).diagonal(), 1 - own_area)
        partial += bool(0 < own_area[0] < 1)
    assert partial >= 5


def test_mixup_and_cutmix_both_chosen():
    b = 8
    aug = make(mean=(0, 0, 0), std=(1, 1, 1), num_classes=b, mixup_alpha=1.0, cutmix_alpha=1.0)
    images, labels = index_images(b), torch.arange(b)
    torch.manual_seed(0)
    modes = []
    for _ in range(30):
        pixels, _ = aug(images, labels)
        integral = torch.equal((pixels * 255).round(), pixels * 255)  # cutmix only copies pixels
        modes.append("cutmix" if integral else "mixup")
    assert 5 <= modes.count("cutmix") <= 25


def test_random_erasing_fills_a_rectangle():
    torch.manual_seed(0)
    aug = make(mean=(0.5,) * 3, std=(0.25,) * 3, random_erasing_prob=1.0)
    images = torch.full((64, 3, 32, 32), 255, dtype=torch.uint8)  # normalised value 2, erased value 0
    pixels, _ = aug(images, torch.zeros(64, dtype=torch.long))
    assert set(pixels.unique().tolist()) <= {0.0, 2.0}
    erased = pixels == 0
    assert torch.equal(erased, erased[:, :1].expand_as(erased))  # all channels
    for mask in erased[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert mask.sum() == len(rows) * len(cols) <= 32 * 32 / 3 * 1.2


def test_random_erasing_probability():
    torch.manual_seed(0)
    aug = make(mean=(0.5,) * 3, std=(0.25,) * 3, random_erasing_prob=0.5)
    images = torch.full((400, 3, 8, 8), 255, dtype=torch.uint8)
    pixels, _ = aug(images, torch.zeros(400, dtype=torch.long))
    assert 150 < (pixels == 0).flatten(1).any(1).sum() < 250


def test_randaugment_changes_images_and_stays_in_range():
    aug = make(randaugment_num_ops=2, randaugment_magnitude=15)
    images, labels = batch()
    plain = aug.normalize(images)
    low, high = aug._normalize(torch.zeros(1, 3, 1, 1)), aug._normalize(torch.ones(1, 3, 1, 1))
    changed = 0
    torch.manual_seed(0)
    for _ in range(5):
        pixels, _ = aug(images, labels)
        assert torch.isfinite(pixels).all()
        assert (pixels >= low - 1e-5).all() and (pixels <= high + 1e-5).all()
        changed += (pixels - plain).abs().amax((1, 2, 3)).gt(0.1).float().mean().item()
    assert changed > 2.5  # most images of most batches change visibly


def test_determinism_and_rng_state():
    aug = make(label_smoothing=0.1, **ALL_ON)
    images, labels = batch()

    def run(seed):
        torch.manual_seed(seed)
        return aug(images, labels)

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # What the Trainer checkpoints (torch's global RNG state) is all that decides the augmentation.
    state = torch.get_rng_state()
    a = aug(images, labels)
    b = aug(images, labels)
    torch.set_rng_state(state)
    a2 = aug(images, labels)
    assert torch.equal(a[0], a2[0]) and torch.equal(a[1], a2[1]) and not torch.equal(a[0], b[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stays_on_device_without_sync():
    aug = make(label_smoothing=0.1, **ALL_ON).cuda()
    images, labels = batch()
    images, labels = images.cuda(), labels.cuda()
    aug(images, labels)  # warm-up (lazy CUDA init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            pixels, targets = aug(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert pixels.is_cuda and targets.is_cuda and pixels.shape == images.shape


@pytest.mark.parametrize("policy", ["randaugment", "autoaugment"])
def test_compiled_augmentation_equals_eager(policy):
    """Under torch_compile the Trainer runs the augmentation compiled; with inductor drawing its random numbers as
    eager does (fallback_random), every pixel and target must match the eager module's. (The config's own `patch`:
    pytest's monkeypatch deletes a torch config attribute on undo instead of restoring it.)"""
    import torch._inductor.config as inductor_config

    ops = 2 if policy == "randaugment" else 0
    aug = make(label_smoothing=0.1, **{**ALL_ON, "policy": policy, "randaugment_num_ops": ops, "mix_prob": 0.5,
                                       "random_erasing_prob": 0.25})
    images, labels = batch(b=64)
    with inductor_config.patch(fallback_random=True):
        compiled = torch.compile(aug, dynamic=False)
        for seed in range(3):
            torch.manual_seed(seed)
            eager_pixels, eager_targets = aug(images, labels)
            torch.manual_seed(seed)
            pixels, targets = compiled(images, labels)
            torch.testing.assert_close(pixels, eager_pixels, rtol=0, atol=1e-5)
            torch.testing.assert_close(targets, eager_targets, rtol=0, atol=1e-6)
    assert inductor_config.fallback_random is False


def test_preview_command_of_the_readme_works_for_the_gpu_recipe_on_a_cpu(tmp_path, cifar10_path, monkeypatch,
                                                                            capsys):
    """`bench/augment.py --preview configs/cifar10_fast.json` draws the augmentation without building TrainingArguments
    (which refuse the recipe's bf16 on a CPU)."""
    output = tmp_path / "preview.png"
    run_as_main("bench/augment.py", ["--preview", "configs/cifar10_fast.json", "--dataset", str(cifar10_path), "--set",
                                     "dataset.max_train_samples=64", "--set", "dataset.validation_size=32", "--output",
                                     str(output)], monkeypatch)  # in process: the script's code, not its imports
    stdout = capsys.readouterr().out
    assert "policy='randaugment'" in stdout and "mixup_alpha=0.8" in stdout
    with Image.open(output) as image:
        assert image.format == "PNG" and image.width > 500
