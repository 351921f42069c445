"""What several test modules share: paths, the tiny run's settings, running the CLIs, reading what they wrote."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The local uoft-cs/cifar10 copy beside the repo; VIT_SCRATCH_CIFAR10 points elsewhere (e.g. the GPU machine's copy).
CIFAR10 = Path(os.environ.get("VIT_SCRATCH_CIFAR10", REPO.parent / "shared" / "datasets" / "cifar10"))
PYTHON = sys.executable
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
CONFIG = str(REPO / "configs" / "cifar10.json")
CPU_2PROC = str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMEOUT = 300

# The tiny model: the one size every test trains or builds. A test that needs another derives from it ({**TINY, ...})
# and says why.
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_MODEL = [arg for key, value in TINY.items() for arg in (f"--model.{key}", str(value))]  # as train.py overrides
# No dropout, no augmentation: a step's loss depends only on the weights and WHICH images the batch holds, so runs
# that shard the same global batch differently must agree.
DETERMINISTIC = ["--model.hidden_dropout_prob", "0", "--dataset.augmentation.random_crop_padding", "0",
                 "--dataset.augmentation.horizontal_flip", "false"]
GLOBAL_BATCH, STEPS, TRAIN_IMAGES, EVAL_IMAGES = 16, 4, 64, 64  # 64 / 16 = 4 steps = exactly one epoch


def tiny_config(**overrides):
    """ViTScratchConfig of the tiny model (32 px images, 4 px patches by default), with `overrides`."""
    from modeling_vit_scratch import ViTScratchConfig

    return ViTScratchConfig(**{**TINY, **overrides})


def subprocess_env(**extra) -> dict:
    """Environment for a child `train.py`/`accelerate launch`: offline, one thread each (bit-identical results,
    and no oversubscription of the 2 cores), no token, no leftover distributed settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT") and not k.startswith("ACCELERATE_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_EVALUATE_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def tiny_run_args(cifar10_path, output_dir, per_device_batch=GLOBAL_BATCH) -> list[str]:
    """configs/cifar10.json made tiny and deterministic: one epoch, evaluated (and checkpointed) at its end."""
    return ["--config", CONFIG, "--dataset.name", str(cifar10_path),
            "--dataset.max_train_samples", str(TRAIN_IMAGES), "--dataset.max_eval_samples", str(EVAL_IMAGES),
            "--dataset.max_test_samples", str(EVAL_IMAGES),
            "--dataset.validation_size", str(EVAL_IMAGES), "--training.max_steps", str(STEPS),
            "--training.per_device_train_batch_size", str(per_device_batch), "--training.logging_steps", "1",
            "--training.output_dir", str(output_dir), *TINY_MODEL, *DETERMINISTIC]


def train_in_process(argv: list[str]) -> int:
    """`train.main(argv)` in this process, on one thread (as the subprocess runs are: the same numbers)."""
    import torch

    import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train.main(argv)
    finally:
        torch.set_num_threads(threads)


def run_as_main(script: str, args: list[str], monkeypatch) -> None:
    """`python SCRIPT ARGS` (SCRIPT relative to the repo) as __main__ in this process, from the repo, on one thread as
    a child would be: the script's own argument parsing and code, without a second interpreter's imports. For
    scripts whose process boundary is not what a test checks (the bench smoke tests)."""
    import runpy

    import torch

    path = REPO / script
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    monkeypatch.syspath_prepend(str(path.parent))  # as `python SCRIPT` puts the script's folder first
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (0, None), f"{script} exited {stop.code}"
    finally:
        torch.set_num_threads(threads)


def run(cmd: list[str], cwd=REPO, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=TIMEOUT)


def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n" \
                                 f"{proc.stderr[-8000:]}"
    return proc


def free_port() -> int:
    """torchrun's default port 29500 may be taken by another test run on this machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_json(path: Path):
    return json.loads(path.read_text())


def log_history(output_dir: Path) -> list[dict]:
    return read_json(output_dir / "trainer_state.json")["log_history"]


def assert_png(path: Path, size=None, min_bytes: int = 0):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, (path, len(data))
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert size is None or image.size == size
        return image.size


def error_line(stderr: str) -> str:
    """The one `error: ...` line, last on stderr (progress bars may come before it)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and sum(x.startswith("error:") for x in lines) == 1, stderr
    return lines[-1]


# What a user without our packages runs: hide modeling_vit_scratch and vit_scratch (sys.path entries holding them,
# meta-path finders of editable installs, and an import fails as if not installed), load the folder without, then
# with trust_remote_code; report as JSON; the classifier's logits and the backbone's pooled output go to OUTPUTS.
_REMOTE_CODE_PROBE = r"""
import importlib.util, json, os, sys
folder, inputs, outputs, marker = sys.argv[1:5]
PKGS = ("modeling_vit_scratch", "vit_scratch")
sys.path[:] = [p for p in sys.path if not any(os.path.isdir(os.path.join(p or os.getcwd(), k)) for k in PKGS)]
sys.meta_path[:] = [f for f in sys.meta_path
                    if not (hasattr(f, "find_spec") and any(f.find_spec(k, None) is not None for k in PKGS))]
report = {"importable": [k for k in PKGS if importlib.util.find_spec(k) is not None]}
for k in PKGS:
    sys.modules[k] = None
import torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification
try:
    AutoModelForImageClassification.from_pretrained(folder)
    report["refused"] = None
except Exception as error:
    report["refused"] = f"{type(error).__name__}: {error}"
report["code_ran_before_trust"] = os.path.exists(marker)
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
backbone = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
code_file = os.path.realpath(sys.modules[type(model).__module__].__file__)
report.update(cls=type(model).__name__, module=type(model).__module__, backbone_cls=type(backbone).__name__,
              backbone_module=type(backbone).__module__, code_ran=os.path.exists(marker),
              code_in_modules_cache=code_file.startswith(os.path.realpath(os.environ["HF_MODULES_CACHE"])),
              ours_imported=[k for k in PKGS if sys.modules.get(k) is not None], label0=model.config.id2label[0])
if os.path.exists(os.path.join(folder, "preprocessor_config.json")):
    report["processor"] = type(AutoImageProcessor.from_pretrained(folder)).__name__
if inputs != "-":
    x = torch.load(inputs)
    with torch.no_grad():
        torch.save({"logits": model(x).logits, "pooled": backbone(x).pooler_output}, outputs)
print("@@REPORT " + json.dumps(report))
"""


def remote_code_probe(folder: Path, work: Path, inputs=None, marker: Path | None = None) -> dict:
    """Loads the saved `folder` in a fresh process where our packages cannot be imported (a Hub user's machine):
    first without trust_remote_code (`refused`: the error, or None), then with it, the classifier and the backbone.
    Returns the report (classes and modules, whether our packages were importable or imported, whether `marker`
    existed after the refusal and at the end) and, with `inputs` (an image tensor), the `logits` and `pooled` output.
    `work` holds the module cache and the files exchanged."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    x, y = work / "probe_inputs.pt", work / "probe_outputs.pt"
    if inputs is not None:
        torch.save(inputs, x)
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(work / "hf_home"), HF_MODULES_CACHE=str(work / "hf_modules"), PYTHONPATH="",
               PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([PYTHON, "-c", _REMOTE_CODE_PROBE, str(folder), str(x) if inputs is not None else "-",
                           str(y), str(marker or work / "no_marker")], cwd=work, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)
    check_ok(proc)
    report = json.loads(proc.stdout.split("@@REPORT ", 1)[1])
    if inputs is not None:
        report.update(torch.load(y))
    return report
