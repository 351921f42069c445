"""Does the randomness of a training step survive compilation and graph replay?

    python bench/gpu_checks.py [--config configs/cifar10_fast.json] [--batch 512] [--tiny] [--json out.json]

Under the recipe's exact settings (its augmentation compiled as the Trainer compiles it, its model compiled with
`training.torch_compile_mode`, e.g. reduce-overhead = CUDA graphs on a GPU, in its precision), the SAME batch of
images is fed to two consecutive steps. A compiled or graph-replayed region that repeats its random numbers would
shrink the augmentation to one fixed draw per batch position, exactly the kind of defect that plateaus a run in the
70s. Each check measures the draws themselves:

  flip          share of images flipped in each step (~0.5), and the share whose decision is the same in both (~0.5)
  crop          crop offsets recovered per image: how many distinct ones, and the share repeated in both steps
                (1 / (2p+1)^2 expected)
  policy        share of images the policy (RandAugment / AutoAugment / TrivialAugment) turns out differently
  erasing       share of images erased in each step, and the share erased in both
  mixing        distinct mixing draws (lam, mode) over 8 steps (mixup / cutmix / mix_prob)
  whole         share of images whose whole augmentation (all of the above) differs between the two steps
  drop path     share of images whose logits differ between two training-mode forwards (+ backward) of the compiled
                model, and that two eval-mode forwards agree exactly (the difference is the randomness)

Every component is traced into ONE compiled function with the run's own `BatchAugment` (the functions the Trainer's
compiled augmentation calls), so each draw comes from compiled code as in training. Exit status 1 when a check
fails. `--tiny` runs it at toy size (the suite does, on the CPU, with --no-compile).
"""

import argparse
import contextlib
import json
import sys

import torch
from steps import TINY_MODEL

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification
from vit_scratch.augment import BatchAugment, random_crop_flip, random_erasing
from vit_scratch.config.schema import MODEL_EXTRA_KEYS, DataArguments, check_keys, read_config_file

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MIX_STEPS = 8


def components(augment: BatchAugment):
    """(images uint8, labels) -> each random component alone, and the whole augmentation, in one function to compile."""
    args = augment.args

    def draw(images: torch.Tensor, labels: torch.Tensor):
        x = images.float() / 255.0
        flipped = random_crop_flip(x, 0, True)
        cropped = random_crop_flip(x, max(args.random_crop_padding, 1), False)
        policy = augment.autoaugment(x) if augment.autoaugment is not None else x
        erased = random_erasing(x, max(args.random_erasing_prob, 0.5))
        whole, targets = augment(images, labels)
        return flipped, cropped, policy, erased, whole, targets

    return draw


def crop_offsets(x: torch.Tensor, cropped: torch.Tensor, padding: int) -> torch.Tensor:
    """(B,) index dy * (2p+1) + dx of the window each image was cropped from (-1 if none matches)."""
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="reflect")
    h, w = x.shape[-2:]
    found = torch.full((len(x),), -1)
    side = 2 * padding + 1
    for dy in range(side):
        for dx in range(side):
            same = (padded[:, :, dy:dy + h, dx:dx + w] == cropped).flatten(1).all(1)
            found = torch.where(same & (found < 0), dy * side + dx, found)
    return found


def per_image_differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a != b).flatten(1).any(1)


def check_augmentation(augment: BatchAugment, compile_it: bool, batch: int, device: torch.device) -> dict:
    args = augment.args
    draw = components(augment)
    draw = torch.compile(draw, dynamic=False) if compile_it else draw
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
    steps = [[t.float().cpu() for t in draw(images, labels)] for _ in range(max(2, MIX_STEPS))]
    (f1, c1, p1, e1, w1, _), (f2, c2, p2, e2, w2, _) = steps[0], steps[1]
    x = images.float().cpu() / 255.0
    mirrored = x.flip(-1)
    flip1 = (f1 == mirrored).flatten(1).all(1)
    flip2 = (f2 == mirrored).flatten(1).all(1)
    assert bool(((f1 == x).flatten(1).all(1) | flip1).all()), "flip output is neither the image nor its mirror"
    padding = max(args.random_crop_padding, 1)
    o1, o2 = crop_offsets(x, c1, padding), crop_offsets(x, c2, padding)
    assert bool((o1 >= 0).all() and (o2 >= 0).all()), "a crop matches no window of the padded image"
    erased1, erased2 = per_image_differs(e1, x), per_image_differs(e2, x)
    mixes = {step[5].numpy().tobytes() for step in steps}  # the batch's targets: lam (and mode) of each draw
    side = 2 * padding + 1
    rows = {
        "flip": {"share_flipped": [flip1.float().mean().item(), flip2.float().mean().item()],
                 "same_decision_share": (flip1 == flip2).float().mean().item()},
        "crop": {"distinct_offsets": [len(set(o1.tolist())), len(set(o2.tolist()))], "possible": side * side,
                 "same_offset_share": (o1 == o2).float().mean().item()},
        "policy": {"name": args.policy, "differs_share": per_image_differs(p1, p2).float().mean().item()
                   if augment.autoaugment is not None else None},
        "erasing": {"share_erased": [erased1.float().mean().item(), erased2.float().mean().item()],
                    "erased_in_both_share": (erased1 & erased2).float().mean().item()},
        "mixing": {"on": augment.mixing, "distinct_draws_in_8_steps": len(mixes) if augment.mixing else None},
        "whole": {"differs_share": per_image_differs(w1, w2).float().mean().item()},
    }
    # Binomial bounds wide enough for batch 64 (4 standard deviations), tight enough to catch a repeated draw.
    flips_ok = all(0.25 < s < 0.75 for s in rows["flip"]["share_flipped"]) and \
        rows["flip"]["same_decision_share"] < 0.75
    rows["flip"]["ok"] = flips_ok
    rows["crop"]["ok"] = min(rows["crop"]["distinct_offsets"]) >= min(side * side // 2, batch // 4) and \
        rows["crop"]["same_offset_share"] < 0.25
    rows["policy"]["ok"] = augment.autoaugment is None or rows["policy"]["differs_share"] > 0.5
    rows["erasing"]["ok"] = all(0.25 < s < 0.75 for s in rows["erasing"]["share_erased"]) and \
        rows["erasing"]["erased_in_both_share"] < 0.5
    rows["mixing"]["ok"] = not augment.mixing or rows["mixing"]["distinct_draws_in_8_steps"] >= 3
    rows["whole"]["ok"] = rows["whole"]["differs_share"] > 0.9
    return rows


def check_drop_path(model_config: ViTScratchConfig, compile_mode: str | None, compile_it: bool, bf16: bool,
                    batch: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = ViTScratchForImageClassification(model_config).to(device)
    run = torch.compile(model, mode=compile_mode) if compile_it else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    x = torch.randn(batch, model_config.num_channels, model_config.image_size, model_config.image_size, device=device)
    labels = torch.randint(0, model_config.num_labels, (batch,), device=device)

    def train_step() -> torch.Tensor:
        with autocast:
            out = run(pixel_values=x, labels=labels)
        out.loss.backward()  # as in training: graph-captured forward and backward
        model.zero_grad(set_to_none=True)
        return out.logits.detach().float().cpu()

    model.train()
    logits = [train_step() for _ in range(3)]  # the first may run before a graph is recorded: compare 2 and 3
    model.eval()
    with torch.no_grad(), autocast:
        evals = [run(pixel_values=x).logits.float().cpu() for _ in range(2)]
    differs = per_image_differs(logits[1], logits[2]).float().mean().item()
    rate = model_config.drop_path_rate
    return {"drop_path_rate": rate, "train_differs_share": differs, "eval_equal": torch.equal(evals[0], evals[1]),
            "ok": torch.equal(evals[0], evals[1]) and (differs > 0.05 if rate > 0 else differs == 0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cifar10_fast.json")
    parser.add_argument("--batch", type=int, help="default: the config's per_device_train_batch_size")
    parser.add_argument("--tiny", action="store_true", help="toy size on any device: batch 64, a 2 x 32 model")
    parser.add_argument("--no-compile", action="store_true", help="eager even where the config compiles (the suite's "
                        "CPU run: inductor's C++ compilation of the policy takes minutes on 2 cores)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    config, _ = read_config_file(args.config)
    sections = check_keys(config)
    training = sections["training"]
    augment_args = DataArguments(**sections["dataset"]).augmentation
    model_values = {k: v for k, v in sections["model"].items() if k not in MODEL_EXTRA_KEYS}
    if args.tiny:  # 2 layers: with one, stochastic depth's linear ramp starts and ends at 0
        model_values.update({**TINY_MODEL, "num_hidden_layers": 2})
    model_config = ViTScratchConfig(**model_values, num_labels=10)
    batch = 64 if args.tiny else (args.batch or training.get("per_device_train_batch_size", 512))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compile_it = bool(training.get("torch_compile") or training.get("torch_compile_mode")) and not args.no_compile
    mode, bf16 = training.get("torch_compile_mode"), bool(training.get("bf16"))
    augment = BatchAugment(augment_args, MEAN, STD, 10, label_smoothing=training.get("label_smoothing_factor", 0.0))
    augment = augment.to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device={name} config={args.config} batch={batch} compile={compile_it} mode={mode} bf16={bf16} "
          f"model={model_config.num_hidden_layers}x{model_config.hidden_size}")
    rows = check_augmentation(augment, compile_it, batch, device)
    rows["drop path"] = check_drop_path(model_config, mode, compile_it, bf16, batch, device)
    for check, row in rows.items():
        shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "ok")
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {check:<10} {shown}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "config": args.config, "batch": batch, "compile": compile_it, "mode": mode,
                       "bf16": bf16, "checks": rows}, f, indent=2)
    return 0 if all(row["ok"] for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
