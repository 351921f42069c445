"""train.py end to end, as users run it: `python train.py`, `accelerate launch` with one and two processes, the older
project's INI, a Hub push (into a local stand-in), and the failures that must leave nothing behind.

Every run is tiny (a 12k-parameter model, 64 training images, a few steps) and the runs that several tests read are
module-scoped fixtures. Subprocesses run with OMP_NUM_THREADS=1: `accelerate launch` sets exactly that when it is
unset, so `python train.py` and `accelerate launch` only give bit-identical weights with the same thread count
(with 2 threads against 1 the float reductions differ, ~1e-8); it is also much faster on a shared 2-core machine.
Faults (kill/resume, SIGTERM, NaN, bad data, determinism across seeds) use tests/faults_harness.py: see the test_*
files named after each (test_resume_sigkill.py, test_preemption.py, test_nonfinite.py, ...).
"""

import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from . import hub_standin
from .helpers import (
    ACCELERATE,
    CIFAR10_CLASSES,
    CONFIG,
    CPU_2PROC,
    EVAL_IMAGES,
    GLOBAL_BATCH,
    REPO,
    STEPS,
    TINY_MODEL,
    TRAIN_IMAGES,
    assert_png,
    check_ok,
    free_port,
    log_history,
    read_json,
    remote_code_probe,
    run,
    tiny_run_args,
    train_in_process,
)

SEED_INI = REPO.parent / "shared" / "seed" / "config.ini"
FAKE_TOKEN = "hf_fake_secret_token_123"


def training_losses(output_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in log_history(output_dir) if "loss" in e}


def tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mtime_ns) of every file below `folder`."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def accelerate_1proc_run(tmp_path_factory, cifar10_path) -> Path:
    """`accelerate launch --num_processes 1 train.py`, global batch 16."""
    output_dir = tmp_path_factory.mktemp("accelerate_1proc") / "out"
    check_ok(run([ACCELERATE, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "train.py", *tiny_run_args(cifar10_path, output_dir)]))
    return output_dir


@pytest.fixture(scope="module")
def accelerate_2proc_run(tmp_path_factory, cifar10_path) -> tuple[Path, subprocess.CompletedProcess]:
    """`accelerate launch --config_file configs/accelerate/cpu_2proc.yaml train.py`: 2 processes x 8 images."""
    output_dir = tmp_path_factory.mktemp("accelerate_2proc") / "out"
    proc = check_ok(run([ACCELERATE, "launch", "--config_file", CPU_2PROC, "--main_process_port", str(free_port()),
                         "train.py", *tiny_run_args(cifar10_path, output_dir, per_device_batch=GLOBAL_BATCH // 2)]))
    return output_dir, proc


# ----------------------------------------------------------------------------------------------- 1. python train.py


def test_python_run_writes_a_complete_hub_folder(python_run):
    out = python_run
    assert (out / "model.safetensors").is_file()
    assert not list(out.rglob("pytorch_model.bin")), "weights must be safetensors only"

    config = read_json(out / "config.json")
    assert config["model_type"] == "vit_scratch"
    assert [config["id2label"][str(i)] for i in range(10)] == CIFAR10_CLASSES
    assert config["label2id"] == {name: i for i, name in enumerate(CIFAR10_CLASSES)}
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vit_scratch.ViTScratchConfig",
        "AutoModel": "modeling_vit_scratch.ViTScratchModel",
        "AutoModelForImageClassification": "modeling_vit_scratch.ViTScratchForImageClassification",
    }
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1  # the overrides reached the model
    for code in ("configuration_vit_scratch.py", "modeling_vit_scratch.py"):
        assert (out / code).read_bytes() == (REPO / "modeling_vit_scratch" / code).read_bytes()

    processor = read_json(out / "preprocessor_config.json")
    assert processor["size"] == {"height": 32, "width": 32} and len(processor["image_mean"]) == 3

    results = read_json(out / "all_results.json")
    for key in ("eval_accuracy", "test_accuracy", "test_top_5_accuracy", "train_samples_per_second"):
        assert isinstance(results[key], float), key
    assert 0 <= results["test_accuracy"] <= results["test_top_5_accuracy"] <= 1
    assert results["world_size"] == 1 and results["seed"] == 0 and results["train_images"] == TRAIN_IMAGES

    card = (out / "README.md").read_text()
    for png in ("training_curves.png", "confusion_matrix.png", "augmentation_preview.png"):
        assert f"]({png})" in card
        assert_png(out / png)
    assert "A Vision Transformer written from scratch" in card  # ours, not the Trainer's automatic card

    experiment = read_json(out / "experiment.json")
    assert set(experiment) == {"dataset", "model", "training"}
    assert experiment["training"]["output_dir"] == str(out)
    assert experiment["training"]["max_steps"] == STEPS and experiment["model"]["hidden_size"] == 32

    assert [e["step"] for e in log_history(out) if "loss" in e] == list(range(1, STEPS + 1))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{STEPS}"]
    assert not list(out.rglob("*.tmp")), "an atomic write left its temp file behind"


def test_a_run_builds_the_pil_processor_without_a_warning_and_it_loads_with_either_backend(python_run, tmp_path):
    """The project installs no torchvision. The log of a run must not open with transformers' "`ViTImageProcessor`
    requires torchvision (not installed); falling back to `ViTImageProcessorPil`": the run builds the PIL class it
    means. The saved file still names the family, "ViTImageProcessor", which AutoImageProcessor maps to both backends
    (torchvision where installed, else PIL): here it and `pipeline` load the PIL class; where torchvision is
    installed the torchvision class is chosen, which takes the same keyword arguments (the ones saved)."""
    from transformers import AutoImageProcessor, ViTImageProcessorPil, pipeline
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.vit.image_processing_vit import ViTImageProcessor  # the torchvision backend's class

    import modeling_vit_scratch  # noqa: F401 (registers vit_scratch: pipeline then needs no remote code)

    log = (python_run.parent / "stderr.txt").read_text()
    assert "requires torchvision" not in log and "falling back to" not in log
    saved = read_json(python_run / "preprocessor_config.json")
    assert saved["image_processor_type"] == "ViTImageProcessor"
    assert IMAGE_PROCESSOR_MAPPING_NAMES["vit"] == {"torchvision": "ViTImageProcessor", "pil": "ViTImageProcessorPil"}
    assert ViTImageProcessor.valid_kwargs is ViTImageProcessorPil.valid_kwargs
    assert set(saved) - {"image_processor_type"} <= set(ViTImageProcessor.valid_kwargs.__annotations__)

    processor = AutoImageProcessor.from_pretrained(python_run)
    assert type(processor) is ViTImageProcessorPil
    assert {k: v for k, v in json.loads(processor.to_json_string()).items() if k in saved} == saved
    image = tmp_path / "image.png"
    Image.fromarray(torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8).numpy()).save(image)
    classifier = pipeline("image-classification", model=str(python_run))
    assert type(classifier.image_processor) is ViTImageProcessorPil
    predictions = classifier(str(image), top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= set(CIFAR10_CLASSES)


# ----------------------------------------------------------------------------------------------- 2. reload exactly


def test_saved_model_reproduces_the_reported_test_accuracy_exactly(python_run, cifar10_path):
    """The saved model + image processor, evaluated on the same test slice, give the Trainer's numbers bit for bit:
    on the uint8 tensors normalised with the processor's mean/std (the Trainer's BatchAugment.normalize path), and
    through the processor on PIL images (the user's path) - both give the same pixel values here."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import modeling_vit_scratch  # noqa: F401 (registers vit_scratch with the Auto classes)
    from modeling_vit_scratch.modeling_vit_scratch import classification_loss
    from vit_scratch.config.schema import DataArguments
    from vit_scratch.data import load_image_data

    out = python_run
    results = read_json(out / "all_results.json")
    dataset = read_json(out / "experiment.json")["dataset"]
    data = load_image_data(DataArguments(name=str(cifar10_path), validation_size=dataset["validation_size"],
                                         max_train_samples=dataset["max_train_samples"],
                                         max_eval_samples=dataset["max_eval_samples"],
                                         max_test_samples=dataset["max_test_samples"]), 32, 3)
    images, labels = data.test.images, data.test.labels
    assert len(labels) == EVAL_IMAGES

    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    assert tuple(processor.image_mean) == data.mean and tuple(processor.image_std) == data.std

    mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
    pixel_values = (images.float() / 255.0 - mean) / std
    pil_pixel_values = processor(images=[Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images],
                                 return_tensors="pt")["pixel_values"]
    assert torch.equal(pil_pixel_values, pixel_values)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the run's thread count: bit-identical logits
    try:
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits  # one batch, as the Trainer's (eval batch 256)
    finally:
        torch.set_num_threads(threads)
    accuracy = (logits.argmax(-1) == labels).double().mean().item()
    assert accuracy == results["test_accuracy"]
    assert classification_loss(logits, labels).item() == pytest.approx(results["test_loss"], rel=1e-6, abs=0)
    top5 = (logits.topk(5, dim=-1).indices == labels[:, None]).any(-1).double().mean().item()
    assert top5 == results["test_top_5_accuracy"]

    # The fit diagnosis: the same model on the training images, un-augmented (all 64 of them here)
    assert results["train_clean_images"] == TRAIN_IMAGES == len(data.train)
    train_pixels = (data.train.images.float() / 255.0 - mean) / std
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            train_logits = model(pixel_values=train_pixels).logits
    finally:
        torch.set_num_threads(threads)
    assert (train_logits.argmax(-1) == data.train.labels).double().mean().item() == results["train_clean_accuracy"]
    assert classification_loss(train_logits, data.train.labels).item() == pytest.approx(
        results["train_clean_loss"], rel=1e-6, abs=0)


# ----------------------------------------------------------------------------------------------- 3. two processes


def test_two_process_launch_trains_data_parallel_and_writes_once(accelerate_2proc_run):
    out, proc = accelerate_2proc_run
    results = read_json(out / "all_results.json")
    assert results["world_size"] == 2
    # Sharded, not each process alone on all the data: 64 images / (2 x 8) = 4 steps per epoch.
    first = next(e for e in log_history(out) if "loss" in e)
    assert first["step"] == 1 and first["epoch"] == pytest.approx(1 / STEPS)
    assert [e["step"] for e in log_history(out) if "loss" in e] == list(range(1, STEPS + 1))  # logged once per step
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{STEPS}"]
    assert not list(out.rglob("*.tmp"))
    assert read_json(out / "experiment.json")["training"]["per_device_train_batch_size"] == GLOBAL_BATCH // 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("vit_scratch: run:") == 1  # the summary comes from the main process only
    assert "2 processes on CPU" in proc.stderr
    assert f"steps      {STEPS} per epoch (global batch {GLOBAL_BATCH})" in proc.stderr


def test_start_up_summary_and_labelled_progress_bars(python_run):
    """One block before training says what runs; the final evaluation and test bars say what they evaluate."""
    stderr = (python_run.parent / "stderr.txt").read_text()
    block = stderr[stderr.index("vit_scratch: run:"):].splitlines()[1:8]
    rows = {line.split()[0]: line.split(maxsplit=1)[1] for line in block}
    assert list(rows) == ["data", "storage", "model", "devices", "precision", "steps", "output"]
    assert rows["storage"] == "device"  # dataset.storage auto: 0.6 MB fit in RAM, which is a CPU run's device
    assert "dataset.storage=auto -> 'device' (cpu): 1 x 0.6 MB <= 50% of the " in stderr
    assert rows["data"].endswith(f"{TRAIN_IMAGES} train / {EVAL_IMAGES} validation / {EVAL_IMAGES} test images, "
                                 "10 classes, 32x32 px")
    parameters = read_json(python_run / "all_results.json")["num_parameters"]
    assert rows["model"] == f"ViTScratch, {parameters:,} parameters, from scratch"
    assert rows["devices"] == "1 process on CPU" and rows["precision"] == "fp32"
    assert rows["steps"] == f"{STEPS} per epoch (global batch {GLOBAL_BATCH}), {STEPS} in all"
    assert rows["output"] == str(python_run)
    assert f"validation (best checkpoint, {EVAL_IMAGES} images): 100%" in stderr
    assert f"test ({EVAL_IMAGES} images): 100%" in stderr and "train: 100%" in stderr
    assert f"training images, un-augmented ({TRAIN_IMAGES} images): 100%" in stderr


def test_run_ends_with_the_fit_diagnosis(python_run):
    """Training accuracy on un-augmented images and the last training loss, beside validation: in the log, in
    all_results.json and as a marker next to the validation curve."""
    results = read_json(python_run / "all_results.json")
    last_loss = [e["loss"] for e in log_history(python_run) if "loss" in e][-1]
    assert results["train_final_loss"] == last_loss
    stderr = (python_run.parent / "stderr.txt").read_text()
    assert (f"fit: final model {100 * results['train_clean_accuracy']:.2f}% on {TRAIN_IMAGES} un-augmented training "
            f"images, {100 * results['eval_accuracy']:.2f}% on validation; last training loss {last_loss:.4f} "
            "(augmented batches)") in stderr


def test_two_processes_first_step_loss_equals_one_process_with_the_same_global_batch(accelerate_2proc_run,
                                                                                     accelerate_1proc_run):
    """accelerate's BatchSamplerShard (split_batches=False, even_batches=True) gives process i the i-th per-device
    batch of each group of num_processes consecutive batches of the SAME seeded permutation; so the union of the
    processes' k-th batches is the single process's k-th batch, and the mean of their (equal-sized) batch losses is
    its loss. With dropout and augmentation off, the first step's loss (same initial weights) must agree."""
    two, one = training_losses(accelerate_2proc_run[0]), training_losses(accelerate_1proc_run)
    assert two[1] == pytest.approx(one[1], abs=1e-5)
    # Later steps too, up to the float rounding of the gradient all-reduce (the global batches are the same sets).
    for step in range(2, STEPS + 1):
        assert two[step] == pytest.approx(one[step], abs=1e-4), step
    # ...and so do the final weights and the test loss (measured: weights within 1e-6, losses within 3e-7).
    two_weights = load_file(accelerate_2proc_run[0] / "model.safetensors")
    one_weights = load_file(accelerate_1proc_run / "model.safetensors")
    for name in one_weights:
        torch.testing.assert_close(two_weights[name], one_weights[name], rtol=0, atol=1e-5, msg=name)
    two_results = read_json(accelerate_2proc_run[0] / "all_results.json")
    one_results = read_json(accelerate_1proc_run / "all_results.json")
    assert two_results["test_loss"] == pytest.approx(one_results["test_loss"], abs=1e-4)


def test_batch_shards_union_is_the_single_process_batch():
    """Why the losses agree (and where they would not): accelerate's sharding, checked on the index level."""
    from accelerate.data_loader import BatchSamplerShard, SeedableRandomSampler
    from torch.utils.data import BatchSampler

    def batches(n, batch_size, rank=None):
        sampler = SeedableRandomSampler(range(n))
        sampler.set_epoch(0)
        batches = BatchSampler(sampler, batch_size, drop_last=False)
        if rank is None:
            return list(batches)
        return list(BatchSamplerShard(batches, num_processes=2, process_index=rank, split_batches=False,
                                      even_batches=True))

    single, shards = batches(64, 16), [batches(64, 8, rank) for rank in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*shards, strict=True)] == [sorted(batch) for batch in single]
    # 70 images: the last global batch differs (6 images alone vs 8 + 8 padded with the epoch's first images).
    single, shards = batches(70, 16), [batches(70, 8, rank) for rank in (0, 1)]
    assert len(single[-1]) == 6 and [len(s[-1]) for s in shards] == [8, 8]
    assert [sorted(a + b) for a, b in zip(*shards, strict=True)][:-1] == [sorted(batch) for batch in single[:-1]]


# ---------------------------------------------------------------------------------------- 4. python == accelerate


def test_python_and_accelerate_one_process_give_identical_results(python_run, accelerate_1proc_run):
    py, acc = read_json(python_run / "all_results.json"), read_json(accelerate_1proc_run / "all_results.json")
    for key in ("test_accuracy", "test_loss", "test_top_5_accuracy", "eval_accuracy", "eval_loss", "train_loss",
                "world_size"):
        assert py[key] == acc[key], key
    assert training_losses(python_run) == training_losses(accelerate_1proc_run)
    py_weights, acc_weights = load_file(python_run / "model.safetensors"), load_file(
        accelerate_1proc_run / "model.safetensors")
    assert py_weights.keys() == acc_weights.keys()
    for name in py_weights:
        assert torch.equal(py_weights[name], acc_weights[name]), name


# ----------------------------------------------------------------------------------------------- 5. Hub push


def test_push_to_hub_uploads_loadable_code_and_our_card_without_the_token(tmp_path, cifar10_path, monkeypatch,
                                                                            capfd):
    hub = hub_standin.install(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "out"
    args = tiny_run_args(cifar10_path, out) + [
        "--training.push_to_hub", "true", "--training.hub_model_id", "user/test-vit",
        "--training.save_strategy", "steps", "--training.save_steps", "2",
        "--training.eval_strategy", "steps", "--training.eval_steps", "2"]  # load_best_model_at_end: must match
    assert train_in_process(args) == 0
    captured = capfd.readouterr()

    assert [c["repo_id"] for c in hub.created] == ["user/test-vit"]
    assert len(hub.uploads) >= 3, [u.commit_message for u in hub.uploads]  # steps 2 and 4, then the final one
    assert [u.commit_message for u in hub.uploads[:2]] == ["Training in progress, step 2",
                                                           "Training in progress, step 4"]
    assert hub.uploads[-1].commit_message == "End of training"
    for upload in hub.uploads:
        assert upload.repo_id == "user/test-vit" and upload.path_in_repo == ""
        assert {"configuration_vit_scratch.py", "modeling_vit_scratch.py", "config.json",
                "model.safetensors"} <= set(upload.files), (upload.commit_message, upload.files)
        assert "auto_map" in read_json(upload.snapshot / "config.json"), upload.commit_message
        assert not any(f.startswith("checkpoint-") for f in upload.files)

    remote = hub.repo
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "configuration_vit_scratch.py",
                 "modeling_vit_scratch.py", "README.md", "training_curves.png", "confusion_matrix.png",
                 "augmentation_preview.png", "all_results.json", "experiment.json", "examples/00_airplane.png",
                 "examples/09_truck.png"):
        assert (remote / name).is_file(), name
        assert (remote / name).read_bytes() == (out / name).read_bytes(), f"{name}: the remote copy is stale"
    card = (remote / "README.md").read_text()
    assert "A Vision Transformer written from scratch" in card and "user/test-vit" in card
    assert "This model is a fine-tuned version of" not in card  # the Trainer's automatic card

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = remote_code_probe(remote, tmp_path / "probe", inputs=x)  # the Hub copy's code, not our package
    assert loaded["importable"] == [] and loaded["ours_imported"] == [], loaded
    assert loaded["cls"] == "ViTScratchForImageClassification"
    assert loaded["module"].startswith("transformers_modules"), loaded["module"]
    assert loaded["label0"] == "airplane" and loaded["logits"].shape == (2, 10)
    assert loaded["processor"].startswith("ViTImageProcessor"), loaded
    from modeling_vit_scratch import ViTScratchForImageClassification

    with torch.no_grad():
        torch.testing.assert_close(loaded["logits"], ViTScratchForImageClassification.from_pretrained(out)(x).logits,
                                   rtol=0, atol=1e-6)

    secret = FAKE_TOKEN.encode()
    for folder in (out, tmp_path / "hub"):
        leaks = [p for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]
        assert not leaks, f"the token was written to {leaks}"
    assert FAKE_TOKEN not in captured.out + captured.err


# ----------------------------------------------------------------------------------------------- 6. INI


def test_older_projects_ini_runs_end_to_end_and_logs_its_mapping(tmp_path, cifar10_path, monkeypatch, caplog):
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # the INI's data folder is ./datasets
    caplog.set_level(logging.INFO, logger="vit_scratch")
    assert train_in_process([str(SEED_INI), "-s", "3", "--training.max_steps", "2",
                             "--dataset.name", str(cifar10_path), "--dataset.validation_size", "32",
                             "--dataset.max_train_samples", str(TRAIN_IMAGES), "--dataset.max_eval_samples", "32",
                             "--dataset.max_test_samples", "32", "--training.output_dir", str(out), *TINY_MODEL]) == 0
    logged = "\n".join(caplog.messages)
    for line in ("INI [dataset] name = 'CIFAR10' -> dataset.name = 'uoft-cs/cifar10'",
                 "INI [model] embed_dim = 256 -> model.hidden_size",
                 "INI [dataloader] batch_size = 32 -> training.per_device_train_batch_size",
                 "INI [dataset] num_classes = 10 -> model.num_labels"):
        assert line in logged, line
    results = read_json(out / "all_results.json")
    assert results["seed"] == 3 and results["world_size"] == 1 and "test_accuracy" in results
    experiment = read_json(out / "experiment.json")
    assert experiment["dataset"]["name"] == str(cifar10_path)  # the override wins over the INI's mapping
    assert experiment["training"]["seed"] == 3 and experiment["training"]["per_device_train_batch_size"] == 32
    assert experiment["model"]["num_labels"] == 10 and experiment["model"]["hidden_size"] == 32
    assert read_json(out / "trainer_state.json")["global_step"] == 2
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


# ----------------------------------------------------------------------------------------------- 7, 8. refusals


def test_misspelt_key_exits_2_naming_it_and_writes_nothing(tmp_path, cifar10_path, capsys):
    out = tmp_path / "out"
    status = train_in_process([*tiny_run_args(cifar10_path, out), "--training.learnig_rate", "1"])
    stderr = capsys.readouterr().err
    assert status == 2, stderr[-3000:]
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert error and "training.learnig_rate" in error[0] and "'learning_rate'" in error[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["--training.report_to", "trackio"],
     'training.report_to=\'trackio\': trackio is not installed; `pip install -e ".[trackio]"`'),
    (["--training.push_to_hub", "true", "--training.hub_model_id", "user/x"],
     "training.push_to_hub=true, but the Hub cannot be used"),
    (["--training.do_train", "false"], "training.do_train is not allowed"),
])
def test_what_would_fail_late_or_be_ignored_fails_before_the_data_loads(tmp_path, extra, message, capsys,
                                                                         monkeypatch):
    """A missing logging backend, an unreachable Hub and keys the run would ignore: `error:` and exit 2 before any
    data is read (the dataset named here does not exist, so reaching the data would give another error)."""
    if "trackio" in extra and importlib.util.find_spec("trackio") is not None:
        pytest.skip("trackio is installed here")
    out = tmp_path / "out"
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    status = train_in_process(["--config", CONFIG, "--dataset.name", str(tmp_path / "no-such-dataset"),
                               "--training.output_dir", str(out), *extra])
    stderr = capsys.readouterr().err
    assert status == 2, stderr[-3000:]
    assert stderr.splitlines()[-1].startswith(f"error: {message}"), stderr[-3000:]
    assert "Traceback" not in stderr and not out.exists()


def test_resume_without_a_checkpoint_fails_clearly(tmp_path, cifar10_path, capsys):
    import train

    for out in (tmp_path / "empty", tmp_path / "missing"):
        if out.name == "empty":
            out.mkdir()
        assert train.main([*tiny_run_args(cifar10_path, out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"--resume: no complete checkpoint in training.output_dir={str(out)!r}" in err
        assert not out.exists() or not any(out.iterdir())
    assert not (tmp_path / "missing").exists()


def test_second_run_into_a_used_output_dir_fails_and_changes_nothing(tmp_path, python_run, cifar10_path, capsys):
    import train

    out = tmp_path / "used"
    shutil.copytree(python_run, out)  # a finished run's folder (a copy: other tests read the original)
    before = tree_digest(out)
    assert train.main(tiny_run_args(cifar10_path, out)) == 2
    err = capsys.readouterr().err
    assert f"training.output_dir={str(out)!r} already holds files" in err and "--resume" in err
    assert tree_digest(out) == before
