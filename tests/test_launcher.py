"""`make train`'s launch (`accelerate launch -q --config_file configs/accelerate/default.yaml train.py ...`): no block
of "values were not passed ... defaults used", and after our one `error:` line no traceback of accelerate's."""

import shlex
import subprocess

from .helpers import REPO, run, subprocess_env


def test_make_train_prints_one_error_line_and_nothing_of_accelerate(tmp_path):
    dry = subprocess.run(["make", "-s", "-n", "train", "CONFIG=configs/cifar10.json",
                          "ARGS=--training.learnig_rate 1"], cwd=REPO, capture_output=True, text=True,
                         env=subprocess_env(), timeout=60)
    command = dry.stdout.strip().splitlines()[-1]  # the launch (after the install steps, if the venv is stale)
    assert "accelerate launch -q --config_file configs/accelerate/default.yaml train.py" in command, dry.stdout
    proc = run(shlex.split(command))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == ["error: unknown key training.learnig_rate; did you mean "
                                                "'learning_rate'?"], proc.stderr[-3000:]
    assert "defaults used" not in proc.stdout + proc.stderr
