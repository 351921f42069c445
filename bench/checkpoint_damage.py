"""Every file of a checkpoint damaged every way, each time followed by a real `--resume`: how many were skipped (and the
run ended exactly like the uninterrupted one), loaded silently, or ended in a traceback.

    python bench/checkpoint_damage.py             # 5 files x 4 kinds of damage = 20 resumes of the tiny run (~3 min)

It reuses tests/faults_harness.py: the tiny 10-step run with a checkpoint after every step (the uninterrupted
reference), then for each (file, damage) a copy of checkpoints 1-9 with checkpoint-9's file damaged (cut short, two
bytes flipped in the middle, replaced by random bytes, removed) and `train.py --resume` in a forkserver child. A
resume is "skipped" when its log names checkpoint-9 and the file, it continues from checkpoint-8 and its final
weights, metrics and every step's numbers equal the reference's; "silent" when it continued from the damaged
checkpoint-9; "traceback" when its log holds one. Prints a table and the counts.
"""

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import faults_harness as harness  # noqa: E402
from tests.helpers import CIFAR10  # noqa: E402

KINDS = ("cut", "flipped", "replaced", "removed")


def main() -> int:
    counts = {"skipped": 0, "silent": 0, "traceback": 0, "other": 0}
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        reference = root / "reference" / "out"
        harness.finished(harness.train_run(harness.write_config(root / "reference", CIFAR10, harness.EVERY_STEP),
                                           reference))
        for name in harness.CHECKPOINT_FILES:
            for kind in KINDS:
                case = root / f"{kind}-{name}"
                out = case / "out"
                out.mkdir(parents=True)
                shutil.copy(reference / "experiment.json", out)
                for step in range(1, 10):
                    shutil.copytree(reference / f"checkpoint-{step}", out / f"checkpoint-{step}")
                harness.corrupt(out / "checkpoint-9", f"{kind} {name}")
                config = harness.write_config(case, CIFAR10, harness.EVERY_STEP)
                run = harness.train_run(config, out, "--resume")
                status, log = run.wait(), run.text()
                if "Traceback" in log:
                    outcome = "traceback"
                elif f"--resume: continuing from {out / 'checkpoint-9'}" in log:
                    outcome = "silent"
                else:
                    try:
                        assert status == 0 and f"skipping damaged checkpoint {out / 'checkpoint-9'}: {name}" in log
                        assert f"--resume: continuing from {out / 'checkpoint-8'}" in log
                        harness.assert_same_run(out, reference)
                        outcome = "skipped"
                    except AssertionError:
                        outcome = "other"
                counts[outcome] += 1
                line = next((x for x in log.splitlines() if "skipping damaged checkpoint" in x), "")
                said = line.split("checkpoint-9: ", 1)[-1][:100]
                print(f"{name:<20} {kind:<9} exit {status}: {outcome:<9} {said}", flush=True)
                shutil.rmtree(case)
    print(f"{sum(counts.values())} damaged checkpoints resumed: {counts['skipped']} skipped naming the file (the run "
          f"then equal to the uninterrupted one), {counts['silent']} loaded silently, {counts['traceback']} ended in a "
          f"traceback, {counts['other']} other")
    return 0 if counts["skipped"] == sum(counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
