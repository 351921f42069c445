"""Saved runs and models: their manifests (each file's size and CRC-32C, written last), which checkpoint to resume
from, whether an output folder may be used, and loading a saved model strictly for the project's own paths (resume,
validation, prediction): a folder whose files do not match its manifest is refused.

transformers' `from_pretrained` keeps its library contract (missing weights are reported in `missing_keys` and
logged, then initialised); `load_complete_model` is where this project refuses a folder whose weights do not cover
the model, naming the keys.
"""

import json
import logging
import mmap
import os
import threading
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from vit_scratch.atomic import write_json
from vit_scratch.config.schema import EXPERIMENT_FILE
from vit_scratch.errors import ConfigError, check_writable
from vit_scratch.sources import is_local_path

logger = logging.getLogger("vit_scratch")


MANIFEST_FILE = "manifest.json"  # each file's size and crc32c, written last: a folder is complete when it matches
# A checkpoint's manifest must list these (the weights, the trainer state, the optimizer and scheduler); resuming
# without any of them would be silently inexact (transformers then starts a fresh optimizer/schedule, unseeded RNGs).
RESUME_FILES = ("model.safetensors", "trainer_state.json", "optimizer.pt", "scheduler.pt")
# With training.ema_decay a checkpoint's model.safetensors holds the average; the weights training goes on from are in
# this file, written before the others.
TRAINING_WEIGHTS_NAME = "training_weights.safetensors"


def file_crc32c(path: Path) -> str:
    """The file's CRC-32C (Castagnoli), hardware-accelerated, over the file mapped into memory (no copy): several
    times sha256's speed, so that it hides beside training (bench/manifest.py: its cost against a checkpoint's save)."""
    import crc32c

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return f"{0:08x}"
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return f"{crc32c.crc32c(data):08x}"


def write_manifest(folder: str | Path, files: list[str] | None = None) -> None:
    """`folder`/manifest.json: the size and CRC-32C of `files` (paths relative to `folder`; default every file under
    it), written atomically, as the last file: its presence says the folder was complete."""
    folder = Path(folder)
    if files is None:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith("."))
    entries = {name: {"size": (folder / name).stat().st_size, "crc32c": file_crc32c(folder / name)}
               for name in files}
    write_json(folder / MANIFEST_FILE, {"algorithm": "crc32c", "files": entries})


class ManifestWriter:
    """`write_manifest(folder)` in a background thread: the checksums (bench/manifest.py times them) run beside the
    next training steps instead of stopping them. `finish()` waits for it and raises what it raised;
    until then the folder has no manifest, so it is not yet complete (a kill in between leaves it incomplete)."""

    def __init__(self, folder: Path):
        self.folder, self.error = Path(folder), None
        self.thread = threading.Thread(target=self._run, name=f"manifest of {self.folder.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            write_manifest(self.folder)
        except BaseException as error:  # raised by finish(), in the training thread
            self.error = error

    def finish(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def manifest_problem(folder: str | Path, required: tuple[str, ...] = ()) -> str | None:
    """Which file of `folder` does not match its manifest (missing, unreadable, another size, another checksum),
    or None when every listed file does. Files the manifest does not list are not looked at (a model folder gains a
    card, results, an `onnx/` export later). `required`: names the manifest itself must list."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        entries = manifest["files"]
        if manifest.get("algorithm") != "crc32c" or not isinstance(entries, dict):
            raise ValueError("unknown layout")
    except FileNotFoundError:
        return f"no {MANIFEST_FILE}"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST_FILE} unreadable ({type(error).__name__})"
    for name in required:
        if name not in entries:
            return f"{MANIFEST_FILE} does not list {name}"
    if not any(name.startswith("rng_state") for name in entries) and required:
        return f"{MANIFEST_FILE} lists no rng_state*.pth"
    for name, entry in entries.items():
        path = folder / name
        try:
            size = path.stat().st_size
            if size != entry["size"]:
                return f"{name} has {size:,} bytes, {MANIFEST_FILE} says {entry['size']:,}"
            if file_crc32c(path) != entry["crc32c"]:
                return f"{name} does not match its checksum in {MANIFEST_FILE} (its bytes changed)"
        except OSError as error:
            return f"{name} cannot be read ({error.strerror or type(error).__name__})"
        except (KeyError, TypeError):
            return f"{MANIFEST_FILE} unreadable (entry of {name})"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is complete: every file matches the manifest the
    checkpoint ended with, which lists the weights, trainer state, optimizer, scheduler and RNG states. Without a
    manifest the checkpoint was cut off before it was complete."""
    return manifest_problem(folder, required=RESUME_FILES)


def is_cut_off(problem: str) -> bool:
    """A checkpoint_problem that means "never finished" (no manifest yet), not "damaged after it was written"."""
    return problem == f"no {MANIFEST_FILE}"


def latest_complete_checkpoint(output_dir: str | Path, log: bool = False) -> Path | None:
    """The highest-numbered complete `checkpoint-N` folder, skipping (and with `log`, logging in one line each, naming
    the file) any that was cut off mid-write or whose files no longer match its manifest."""
    folders = [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        if log:
            logger.warning("skipping %s checkpoint %s: %s", "incomplete" if is_cut_off(problem) else "damaged",
                           folder, problem)
    return None


def damaged_checkpoints(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders whose manifest exists but whose files do not match it."""
    return [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if p.name.split("-")[-1].isdigit() and (problem := checkpoint_problem(p)) and not is_cut_off(problem)]


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
    folder = Path(source).expanduser()
    if (folder / MANIFEST_FILE).is_file() and (problem := manifest_problem(folder)):
        raise ConfigError(f"{source}: the model's files do not match its {MANIFEST_FILE}: {problem}")
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
    """Why `source` (a model folder or Hub id) cannot be a local model folder, or None. A local path
    (sources.is_local_path) must be a folder holding config.json; anything else may be a Hub id and is left to
    from_pretrained."""
    if not is_local_path(source):
        return None
    path = Path(source).expanduser()
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
    if checkpoint is None and (damaged := damaged_checkpoints(output_dir)):
        raise ConfigError(f"--resume: no complete checkpoint in training.output_dir={str(output_dir)!r}: "
                          f"{len(damaged)} damaged (their files do not match their {MANIFEST_FILE}; see the log)")
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
