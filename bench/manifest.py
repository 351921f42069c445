"""What a checkpoint's manifest costs: the CRC-32C of every file, against the Trainer's save of the same checkpoint.

    python bench/manifest.py                 # the fast config's model (7 x 384, 10.4 M parameters) + AdamW state
    python bench/manifest.py --config configs/cifar10_cpu.json --repeat 9

The Trainer (transformers' own `_save_checkpoint`: weights, optimizer, scheduler, RNG state, trainer state) saves a
checkpoint of the config's model after one AdamW step (so the optimizer holds its two moments), then the manifest
is written as ViTScratchTrainer writes it: `ManifestWriter` starts a thread (what the training loop waits for) that
checksums every file, joined before the next save. Timed `--repeat` times each, into a fresh folder (the files
still in the page cache, as they are after a save), and, for comparison, `write_manifest` in line (the CRC-32C of
every file, what the thread does) and sha256 over the same files. Prints the medians and each as a share of the save.
"""

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification  # noqa: E402
from vit_scratch.training.checkpoints import ManifestWriter, write_manifest  # noqa: E402


def sha256_of(folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        with open(path, "rb") as f:
            hashlib.file_digest(f, "sha256")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "cifar10_fast.json"))
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    model_keys = json.loads(Path(args.config).read_text())["model"]
    model = ViTScratchForImageClassification(ViTScratchConfig(**model_keys, num_labels=10))
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(root), report_to="none", use_cpu=True,
                                                              save_strategy="steps", disable_tqdm=True))
        trainer.create_optimizer_and_scheduler(num_training_steps=10)
        model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
        trainer.optimizer.step()
        times = {"save": [], "manifest, waited for": [], "its thread, to the end": [], "crc32c in line": [],
                 "sha256 in line": []}
        for i in range(args.repeat):
            trainer.state.global_step = i + 1
            start = time.perf_counter()
            trainer._save_checkpoint(model, None)
            times["save"].append(time.perf_counter() - start)
            folder = root / f"checkpoint-{i + 1}"
            start = time.perf_counter()
            writer = ManifestWriter(folder)
            times["manifest, waited for"].append(time.perf_counter() - start)
            writer.finish()
            times["its thread, to the end"].append(time.perf_counter() - start)
            start = time.perf_counter()
            write_manifest(folder)
            times["crc32c in line"].append(time.perf_counter() - start)
            start = time.perf_counter()
            sha256_of(folder)
            times["sha256 in line"].append(time.perf_counter() - start)
            size = sum(p.stat().st_size for p in folder.iterdir())
            shutil.rmtree(folder)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{model.num_parameters():,} parameters, checkpoint of {size / 1e6:.1f} MB, medians of {args.repeat}:")
    for name, seconds in median.items():
        ratio = "" if name == "save" else f"  ({seconds / median['save']:.1%} of the save)"
        print(f"  {name:<24} {seconds * 1000:8.2f} ms{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
