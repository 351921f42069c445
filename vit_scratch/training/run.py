"""One training run, end to end: validated experiment -> data -> model -> Trainer -> results in `output_dir`.

`output_dir` ends with the final (best-on-validation) model in Hub format (safetensors, config with id2label
and auto_map, the model's code, the image processor), `experiment.json` (the config as run),
`all_results.json`, the model card `README.md` and its two plots; and the Hub repo too with `push_to_hub`.
"""

import copy
import dataclasses
import logging
import math
import os
import time
from pathlib import Path

from transformers import ViTImageProcessorPil, set_seed
from transformers.image_utils import PILImageResampling
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PredictionOutput

from modeling_vit_scratch.configuration_vit_scratch import ViTScratchConfig
from modeling_vit_scratch.modeling_vit_scratch import ViTScratchForImageClassification
from vit_scratch.atomic import atomic_path, write_json
from vit_scratch.augment import BatchAugment
from vit_scratch.backends import training_precision
from vit_scratch.config.schema import Experiment
from vit_scratch.data import ImageData
from vit_scratch.errors import ConfigError
from vit_scratch.examples import EXAMPLES_DIR, write_examples
from vit_scratch.metrics import build_compute_metrics, confusion_matrix
from vit_scratch.reporting.card import device_name, effective_config, write_model_card
from vit_scratch.reporting.figures import (
    CLEAN_TRAIN_PREFIX,
    plot_augmentation_preview,
    plot_confusion_matrix,
    plot_training_curves,
)
from vit_scratch.storage import default_workers, load_data, make_dataset, stream_mean_std
from vit_scratch.training.checkpoints import EXPERIMENT_FILE, check_output_dir, checkpoint_mismatch
from vit_scratch.training.pretrained import Pretrained, load_pretrained
from vit_scratch.training.trainer import ViTScratchTrainer
from vit_scratch.training.writes import failed_writes_end_the_run, warn_if_short_of_space

logger = logging.getLogger("vit_scratch")

PREVIEW_FILE = "augmentation_preview.png"
CLEAN_TRAIN_IMAGES = 10_000  # training images the final model is evaluated on, un-augmented (the fit diagnosis)


def train_and_evaluate(experiment: Experiment, resume: bool = False, callbacks: tuple = (),
                       report: bool = True) -> dict:
    """Train, evaluate on validation and test, save and report; `callbacks` are extra TrainerCallbacks. Without
    `report` (a benchmark whose output folder is thrown away), the results only: no augmentation preview, final
    model, figures, examples or card are written."""
    args = experiment.training
    checkpoint = check_output_dir(experiment, resume)
    pretrained = load_weights(experiment)  # before the data: a bad source fails first, and it decides the architecture
    model_config = pretrained.config if pretrained else experiment.model
    set_seed(args.seed)
    data, storage = load_run_data(experiment, model_config, pretrained)
    set_seed(args.seed)  # right before the weights are drawn, so a resumed run rebuilds the same model
    model = build_model(with_labels(model_config, data.class_names), pretrained, checkpoint)
    del pretrained  # the checkpoint's own copy of the weights is no longer needed
    trainer = build_trainer(experiment, model, data, storage, callbacks)
    start_output(trainer, experiment, data, storage, checkpoint, preview=report)
    results = train(trainer, checkpoint)
    evaluation, test = evaluate_all(trainer, data, storage)
    results |= evaluation | run_facts(args, model, data)
    if not report:
        return results
    save_and_report(trainer, experiment, data, results, test)
    if args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    return results


def load_weights(experiment: Experiment) -> Pretrained | None:
    """`model.pretrained`'s checkpoint merged with the config's model section, or None (a fresh start). From the Hub,
    the main process downloads and the others then read the cache."""
    if experiment.pretrained is None:
        return None
    args = experiment.training
    with args.main_process_first(local=args.save_on_each_node, desc="loading model.pretrained"):
        return load_pretrained(experiment.pretrained, experiment.raw["model"])


def load_run_data(experiment: Experiment, model_config: ViTScratchConfig,
                  pretrained: Pretrained | None) -> tuple[ImageData, str]:
    """(the splits at the model's size, labels checked, with the mean/std to normalise by; where they live).

    Several processes: the main one decodes into the datasets cache first, then the others read it (one per machine
    with save_on_each_node, which says the machines share no filesystem). Storage 'stream' decodes nothing here
    (`datasets` still prepares its Arrow files of the source once) and sets `training.dataloader_num_workers` when
    the config does not. The mean/std are the pretrained checkpoint's when it has them (what its weights learned
    with), else the training images' (streamed: measured now, decoding them or a sample once)."""
    args = experiment.training
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    data, storage, why = load_data(experiment.dataset, model_config.image_size, model_config.num_channels,
                                   experiment.num_labels, args.device, local_processes,
                                   lambda desc: args.main_process_first(local=args.save_on_each_node, desc=desc))
    if args.process_index == 0:
        logger.info("%s", why)
    if storage == "stream" and "dataloader_num_workers" not in experiment.raw["training"]:
        args.dataloader_num_workers = default_workers(local_processes)
    if pretrained and pretrained.mean is not None:
        data = dataclasses.replace(data, mean=pretrained.mean, std=pretrained.std)
    elif data.mean is None:
        data = stream_mean_std(data, args.dataloader_num_workers, args.dataloader_multiprocessing_context)
    per_step = args.per_device_train_batch_size * args.world_size
    if len(data.train) < per_step:
        raise ConfigError(f"training.per_device_train_batch_size={args.per_device_train_batch_size} x "
                          f"{args.world_size} process(es) = {per_step} images per step, but the training split holds "
                          f"{len(data.train)}: training drops an incomplete last batch, so it would never step")
    return data, storage


def build_model(config: ViTScratchConfig, pretrained: Pretrained | None,
                checkpoint: Path | None) -> ViTScratchForImageClassification:
    """The run's model: the pretrained weights (a new classifier when the classes differ) or fresh ones, drawn from
    the global RNG (seed first). Resuming, the checkpoint must hold weights of this very model."""
    model = pretrained.build(config) if pretrained else ViTScratchForImageClassification(config)
    if checkpoint is not None and (problem := checkpoint_mismatch(model, checkpoint)):
        raise ConfigError(f"--resume: {checkpoint} holds another model's weights ({problem})")
    return model


def with_labels(config: ViTScratchConfig, class_names: list[str]) -> ViTScratchConfig:
    """The experiment's model config with the data's classes as id2label/label2id (and so num_labels)."""
    config = copy.deepcopy(config)
    config.id2label = dict(enumerate(class_names))
    config.label2id = {name: i for i, name in config.id2label.items()}
    return config


def build_trainer(experiment: Experiment, model: ViTScratchForImageClassification, data: ImageData, storage: str,
                  callbacks: tuple) -> ViTScratchTrainer:
    """The Trainer over the training and validation splits, with the image processor to save, the metrics, and the
    augmentation normalising by the data's mean/std."""
    args, config = experiment.training, model.config
    return ViTScratchTrainer(
        model=model,
        args=args,
        train_dataset=make_dataset(data.train, storage, args.device),
        eval_dataset=make_dataset(data.validation, storage, args.device) if data.validation is not None else None,
        processing_class=build_image_processor(config, data),
        compute_metrics=build_compute_metrics(),
        augment=BatchAugment(experiment.dataset.augmentation, data.mean, data.std, config.num_labels,
                             label_smoothing=args.label_smoothing_factor),
        callbacks=list(callbacks),
    )


def build_image_processor(config: ViTScratchConfig, data: ImageData) -> ViTImageProcessorPil:
    """What `pipeline` and users apply to a PIL image: resize to the model's size, scale, normalise by the data.

    The PIL backend, as this project installs no torchvision (`ViTImageProcessor` is the torchvision one: without it,
    transformers falls back to this class with a warning). The saved `image_processor_type` is "ViTImageProcessor",
    the family, so that AutoImageProcessor loads it with whichever backend the reader has."""
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": config.image_size, "width": config.image_size},
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(data.mean),
        image_std=list(data.std),
    )


def start_output(trainer: ViTScratchTrainer, experiment: Experiment, data: ImageData, storage: str,
                 checkpoint: Path | None, preview: bool = True) -> None:
    """Once every process has checked output_dir, rank 0 logs what is about to run, warns when the disk looks too
    small for the run's checkpoints, and writes experiment.json and (with `preview`) the augmentation preview."""
    args = trainer.args
    output_dir = Path(args.output_dir)
    # Every process checks output_dir (check_output_dir) before the first one writes into it: without this barrier
    # a slower rank of a multi-process launch finds rank 0's experiment.json and refuses to start.
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    logger.info("%s", startup_summary(experiment, data, trainer, checkpoint, storage))
    steps_per_epoch, total_steps = planned_steps(args, len(data.train))
    warn_if_short_of_space(output_dir, trainer.model, args, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    with failed_writes_end_the_run(output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / EXPERIMENT_FILE, experiment.raw)
        if preview:
            plot_augmentation_preview(trainer.augment, data.train.images, data.train.labels, data.class_names,
                                      output_dir / PREVIEW_FILE)


def startup_summary(experiment: Experiment, data: ImageData, trainer: ViTScratchTrainer,
                    checkpoint: Path | None, storage: str = "device") -> str:
    """What is about to run, in one block: data, model, devices, precision, steps, output."""
    args, model = trainer.args, trainer.model
    config = model.config

    def split(images) -> str:
        return f"{len(images):,}" if images is not None else "no"

    per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    steps_per_epoch, total = planned_steps(args, len(data.train))
    device = device_name(args.device)
    precision = training_precision(args.bf16, args.fp16)
    start = f"from {experiment.pretrained}" if experiment.pretrained else "from scratch"
    compiled = f", torch.compile ({args.torch_compile_mode or 'default'})" if args.torch_compile else ""
    rows = {
        "data": f"{experiment.dataset.name}: {split(data.train)} train / {split(data.validation)} validation / "
                f"{split(data.test)} test images, {len(data.class_names)} classes, {config.image_size}x"
                f"{config.image_size} px",
        "storage": storage + (f", decoded by {args.dataloader_num_workers} DataLoader worker(s) per process"
                              if storage == "stream" else ""),
        "model": f"ViTScratch, {model.num_parameters():,} parameters, {start}",
        "devices": f"{args.world_size} process{'es' if args.world_size > 1 else ''} on {device}"
                   + (f" ({args.distributed_state.distributed_type.value})" if args.world_size > 1 else ""),
        "precision": f"{precision}{' mixed' if precision != 'fp32' else ''}{compiled}",
        "steps": f"{steps_per_epoch:,} per epoch (global batch {per_step:,}), {total:,} in all"
                 + (f", resuming from {checkpoint.name}" if checkpoint else ""),
        "output": str(args.output_dir),
    }
    return "run:\n" + "\n".join(f"  {name:<10} {text}" for name, text in rows.items())


def planned_steps(args, train_images: int) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps of the whole run)."""
    steps_per_epoch = train_images // (args.per_device_train_batch_size * args.world_size) \
        // args.gradient_accumulation_steps
    total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    return steps_per_epoch, total


def train(trainer: ViTScratchTrainer, checkpoint: Path | None) -> dict:
    """Train (on from `checkpoint` when resuming): the Trainer's metrics as train_*, and the wall-clock seconds."""
    start = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    results = {f"train_{k.removeprefix('train_')}": v for k, v in train_result.metrics.items()}
    results["train_wall_seconds"] = time.perf_counter() - start
    return results


def evaluate_all(trainer: ViTScratchTrainer, data: ImageData, storage: str) -> tuple[dict, PredictionOutput | None]:
    """The final model on un-augmented training images (fit_diagnosis), on validation and on test: their metrics,
    and test's predictions (for the confusion matrix; None without a test split)."""
    args = trainer.args
    results = fit_diagnosis(trainer, make_dataset(data.train.head(CLEAN_TRAIN_IMAGES), storage, args.device))
    if data.validation is not None:
        best = "best checkpoint, " if args.load_best_model_at_end else ""
        trainer.progress_label = f"validation ({best}{len(data.validation):,} images)"
        results.update(trainer.evaluate(metric_key_prefix="eval"))
    test = None
    if data.test is not None:
        trainer.progress_label = f"test ({len(data.test):,} images)"
        test = trainer.predict(make_dataset(data.test, storage, args.device), metric_key_prefix="test")
        results.update(test.metrics)
    return results, test


def fit_diagnosis(trainer: ViTScratchTrainer, clean_train) -> dict:
    """Under- or overfitting, in numbers: the final model's accuracy and loss on `clean_train` (the first
    `CLEAN_TRAIN_IMAGES` training images) as evaluation sees them (no augmentation), and the last logged training
    loss (on augmented, possibly mixed batches). Far above validation: overfitting; close to it and low:
    underfitting."""
    n = len(clean_train)
    trainer.progress_label = f"training images, un-augmented ({n:,} images)"
    metrics = trainer.evaluate(clean_train, metric_key_prefix=CLEAN_TRAIN_PREFIX)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    keep = ("accuracy", "loss")
    return {**{f"{CLEAN_TRAIN_PREFIX}_{k}": metrics[f"{CLEAN_TRAIN_PREFIX}_{k}"] for k in keep},
            f"{CLEAN_TRAIN_PREFIX}_images": n, "train_final_loss": losses[-1] if losses else None}


def run_facts(args, model: ViTScratchForImageClassification, data: ImageData) -> dict:
    """What ran, for all_results.json and the card: processes, parameters, seed, images per split."""
    return dict(world_size=args.world_size, num_parameters=model.num_parameters(), seed=args.seed,
                train_images=len(data.train), eval_images=len(data.validation or ()), test_images=len(data.test or ()))


def save_and_report(trainer: ViTScratchTrainer, experiment: Experiment, data: ImageData, results: dict,
                    test: PredictionOutput | None) -> None:
    """Log the fit, save the final model (best on validation with load_best_model_at_end; every process takes part),
    then rank 0 writes trainer_state.json and the report (write_report)."""
    output_dir = Path(trainer.args.output_dir)
    if trainer.is_world_process_zero():
        logger.info("fit: final model %.2f%% on %s un-augmented training images, %s; last training loss %s "
                    "(augmented batches)", 100 * results[f"{CLEAN_TRAIN_PREFIX}_accuracy"],
                    f"{results[f'{CLEAN_TRAIN_PREFIX}_images']:,}",
                    f"{100 * results['eval_accuracy']:.2f}% on validation" if "eval_accuracy" in results
                    else "no validation", _format(results.get("train_final_loss")))
    trainer.save_model()  # the final model, renamed into place when complete
    if trainer.is_world_process_zero():
        with failed_writes_end_the_run(output_dir):
            with atomic_path(output_dir / TRAINER_STATE_NAME) as tmp:  # Trainer.save_state, atomically
                trainer.state.save_to_json(str(tmp))
            write_report(output_dir, trainer, experiment, data, results, test)


def write_report(output_dir: Path, trainer: ViTScratchTrainer, experiment: Experiment, data: ImageData,
                 results: dict, test) -> None:
    """all_results.json (every key), the curves, the test confusion matrix, the demo's example images and the model
    card (rank 0 only).

    The card's Hub id is the repo pushed to: `trainer.hub_model_id` resolves a bare `hub_model_id` (or, without
    one, the output folder's name) to `user/name`; without a push it is the configured id, if any.
    """
    write_json(output_dir / "all_results.json", results)
    plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
    if test is not None:
        predictions = test.predictions[0] if isinstance(test.predictions, tuple) else test.predictions
        matrix = confusion_matrix(predictions.argmax(-1), test.label_ids, len(data.class_names))
        plot_confusion_matrix(matrix, data.class_names, output_dir / "confusion_matrix.png")
    write_examples(output_dir / EXAMPLES_DIR, data.test or data.validation, data.class_names)  # for demo.py
    repo_id = trainer.hub_model_id or trainer.args.hub_model_id
    write_model_card(
        output_dir / "README.md",
        model_name=repo_id or output_dir.name,
        results=results,
        config=effective_config(experiment, trainer.model.config),
        dataset_name=experiment.dataset.name,
        test_split=experiment.dataset.test_split,
        class_names=data.class_names,
        repo_id=repo_id,
        hardware=device_name(trainer.args.device),
        curves_png="training_curves.png",
        confusion_png="confusion_matrix.png" if test is not None else None,
        preview_png=PREVIEW_FILE,
        config_file=EXPERIMENT_FILE,
        base_model=experiment.pretrained,
    )


def _format(value: float | None) -> str:
    return "not logged" if value is None else f"{value:.4f}"
