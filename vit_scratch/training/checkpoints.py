"""Saved runs and models: which checkpoint to resume from, whether an output folder may be used, and loading a saved
model strictly for the project's own paths (resume, validation, prediction).

transformers' `from_pretrained` keeps its library contract (missing weights are reported in `missing_keys` and
logged, then initialised); `load_complete_model` is where this project refuses a folder whose weights do not cover
the model, naming the keys.
"""

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from vit_scratch.cli.errors import ConfigError, check_writable
from vit_scratch.config.schema import EXPERIMENT_FILE

logger = logging.getLogger("vit_scratch")


# What the Trainer writes before trainer_state.json; resuming without any of them is silently inexact
# (transformers then starts a fresh optimizer/schedule or unseeded RNGs, with at most an info message).
RESUME_FILES = ("optimizer.pt", "scheduler.pt")
# With training.ema_decay a checkpoint's model.safetensors holds the average; the weights training goes on from are in
# this file, written before the others.
TRAINING_WEIGHTS_NAME = "training_weights.safetensors"


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is complete.

    The Trainer writes trainer_state.json last, non-atomically: a checkpoint is complete when that file parses,
    the weights' safetensors header reads and covers the file, and the optimizer, scheduler and RNG states exist.
    """
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError) as error:
        return f"trainer_state.json unreadable ({type(error).__name__})"
    try:
        with safe_open(folder / "model.safetensors", framework="pt") as weights:
            weights.keys()
    except Exception as error:  # missing or truncated; safetensors raises its own SafetensorError
        return f"model.safetensors unreadable ({type(error).__name__}: {error})"
    for name in RESUME_FILES:
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
            return f"{name} missing or empty"
    if not any(p.stat().st_size for p in folder.glob("rng_state*.pth")):
        return "rng_state*.pth missing"
    return None


def latest_complete_checkpoint(output_dir: str | Path, log: bool = False) -> Path | None:
    """The highest-numbered complete `checkpoint-N` folder, skipping (and with `log`, logging) any that was cut off
    mid-write."""
    folders = [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        if log:
            logger.warning("skipping incomplete checkpoint %s: %s", folder, problem)
    return None


def checkpoint_mismatch(model: torch.nn.Module, folder: Path) -> str | None:
    """How the weights in `folder` differ from `model`'s parameters and buffers (names, shapes), or None."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    with safe_open(folder / "model.safetensors", framework="pt") as weights:
        found = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or unexpected:
        return f"missing tensors {missing[:3]}, unexpected tensors {unexpected[:3]}"
    for name, shape in expected.items():
        if found[name] != shape:
            return f"{name} has shape {list(found[name])} in the checkpoint, {list(shape)} in this model"
    return None


def load_complete_model(source: str | Path, model_class=None, **kwargs) -> torch.nn.Module:
    """`model_class.from_pretrained(source)` (default ViTScratchForImageClassification), refusing with ConfigError
    (an `error:` for the CLIs) a source that cannot be read or whose weights miss or mismatch any of the model's."""
    if model_class is None:
        from modeling_vit_scratch.modeling_vit_scratch import ViTScratchForImageClassification as model_class
    try:
        model, info = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    except Exception as error:  # OSError (no weights), SafetensorError (truncated), RuntimeError (sizes), ...
        raise ConfigError(f"{source}: cannot load the model: {type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0]}") from None
    missing = sorted(info["missing_keys"])
    mismatched = sorted(key for key, *_ in info["mismatched_keys"])
    if missing or mismatched:
        parts = [f"{len(keys)} {what} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
                 for what, keys in (("missing", missing), ("of another shape", mismatched)) if keys]
        raise ConfigError(f"{source}: the weights do not cover {type(model).__name__}: {'; '.join(parts)}")
    if info["unexpected_keys"]:
        logger.warning("%s: ignoring %d weights the model does not use (%s)", source, len(info["unexpected_keys"]),
                       ", ".join(sorted(info["unexpected_keys"])[:5]))
    return model


def local_source_problem(source: str) -> str | None:
    """Why `source` (a model folder or Hub id) cannot be a local model folder, or None. A name that exists, or that
    only a path can be ("./x", "/x", "~/x", "a/b/c"), is a local path: it must be a folder holding config.json.
    Anything else may be a Hub id (OWNER/NAME) and is left to from_pretrained."""
    path = Path(source).expanduser()
    if not (path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1):
        return None
    if not path.is_dir():
        return "no such folder"
    if not (path / "config.json").is_file():
        return "not a saved model (no config.json; train.py's output_dir holds one)"
    return None


def check_output_dir(experiment, resume: bool) -> Path | None:
    """Refuse a folder that cannot be written, and to mix runs: a fresh run needs an empty folder; a resumed one the
    same model. Returns the checkpoint."""
    output_dir = Path(experiment.training.output_dir)
    saved = output_dir / EXPERIMENT_FILE
    check_writable(output_dir, f"training.output_dir={str(output_dir)!r}", folder=True)
    if not resume:
        if output_dir.exists() and any(output_dir.iterdir()):
            raise ConfigError(f"training.output_dir={str(output_dir)!r} already holds files (another run?); "
                              "pass --resume to continue that run, or choose an empty folder")
        return None
    checkpoint = latest_complete_checkpoint(output_dir, log=True)
    same_model = not saved.is_file() or json.loads(saved.read_text()).get("model") == experiment.raw["model"]
    if checkpoint is None:
        # This run started here but was killed before its first checkpoint was complete: continuing it is
        # starting it again (else a requeued job that always passes --resume could never get going again).
        finished = any((output_dir / name).exists() for name in ("all_results.json", "model.safetensors"))
        if saved.is_file() and same_model and not finished:
            logger.warning("--resume: %s holds no complete checkpoint yet (the run stopped before its first one); "
                           "starting from step 0", output_dir)
            return None
        raise ConfigError(f"--resume: no complete checkpoint in training.output_dir={str(output_dir)!r}")
    if not same_model:
        raise ConfigError(f"--resume: {checkpoint} was trained with another model section; "
                          f"see {saved} for the one it was trained with")
    with_ema = (checkpoint / TRAINING_WEIGHTS_NAME).is_file()
    if with_ema != (experiment.training.ema_decay is not None):
        raise ConfigError(f"--resume: {checkpoint} was saved {'with' if with_ema else 'without'} an average of the "
                          f"weights, but training.ema_decay={experiment.training.ema_decay!r}; resume with the "
                          f"setting it was trained with (see {saved})")
    logger.info("--resume: continuing from %s", checkpoint)
    return checkpoint
