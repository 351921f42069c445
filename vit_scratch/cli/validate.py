"""Evaluate a saved model on one split of a dataset: accuracy, top-5 accuracy, loss, per-class accuracy, confusion.

    python validate.py MODEL [--split test] [--dataset.KEY VALUE ...] [--output-dir DIR] [--batch-size N]
                       [--precision fp32|bf16|fp16] [--trust-remote-code] [--backend onnxruntime [--onnx-file PATH]]

MODEL is a folder train.py wrote (or any `save_pretrained` folder) or a Hub id. The data keys are train.py's
`dataset.*` keys, checked the same way; when MODEL holds train.py's `experiment.json`, its `dataset` section is the
starting point (the same source, hold-out and sample limits as the run), and `--dataset.KEY VALUE` changes it.

--split: `test` (the split dataset.test_split names; what training reports as test_*), `validation` (the rows
training held out of dataset.train_split: dataset.validation_size / validation_seed / max_eval_samples; what it
reports as eval_*), `train` (the training rows that remain), or any other split name of the source.

Images are decoded exactly as for training, normalised by MODEL's preprocessor_config.json and run in the run's
precision, so the numbers equal training's on the same split. --backend onnxruntime runs MODEL's ONNX file instead
(export.py's; --onnx-file onnx/model_quantized.onnx for int8) on the same inputs. Writes eval_results.json and
confusion_matrix.png into --output-dir (default: ./validate-MODEL-DATASET-SPLIT in the current folder, never inside
MODEL, which a later push would upload).
"""

import argparse
import re
import sys
from pathlib import Path

from vit_scratch import errors
from vit_scratch.backends import PRECISIONS
from vit_scratch.cli.args import (
    add_backend,
    add_trust_remote_code,
    positive_int,
    report_error,
    setup_logging,
    split_overrides,
)
from vit_scratch.config import schema
from vit_scratch.config.saved import dataset_arguments, run_precision, saved_experiment

RESULTS_FILE, CONFUSION_FILE = "eval_results.json", "confusion_matrix.png"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a saved model folder (train.py's output) or a Hub id")
    parser.add_argument("--split", default="test", help="test (default), validation, train, or a split's name")
    parser.add_argument("--output-dir", metavar="DIR", help="where eval_results.json and confusion_matrix.png go")
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=256,
                        help="images per forward pass (256)")
    add_trust_remote_code(parser)
    parser.add_argument("--precision", choices=PRECISIONS, help="fp32, or bf16/fp16 autocast (default: the run's, "
                        "from MODEL/experiment.json's training.bf16/fp16, as its reported numbers were computed; "
                        "else fp32; the onnxruntime backend: fp32 inputs)")
    add_backend(parser)
    own, overrides = split_overrides(parser, argv)
    if {"-h", "--help"} & set(own):  # the dataset keys, with their types, defaults and meaning
        parser.epilog = schema.describe_keys(sections=("dataset",))
    return parser.parse_args(own), overrides


def default_output_dir(model: str, dataset: str, split: str) -> Path:
    """./validate-MODEL-DATASET-SPLIT: in the current folder, never inside the model's (a push would upload it)."""
    def short(name: str) -> str:
        return re.sub(r"[^\w.-]+", "_", Path(name.rstrip("/")).name) or "data"

    return Path(f"validate-{short(model)}-{short(dataset)}-{short(split)}")


def check_output_dir(output_dir: Path, model: str) -> None:
    """Never write over a model's own files (its confusion_matrix.png, say): no model folder as the output; and a
    folder that can be written."""
    if output_dir.resolve() == Path(model).expanduser().resolve() or (output_dir / "config.json").exists():
        raise errors.ConfigError(f"--output-dir {output_dir}: a model folder; its files would be overwritten (pick "
                                 "another folder)")
    errors.check_writable(output_dir, f"--output-dir {output_dir}", folder=True)


def evaluate(args: argparse.Namespace, data_args, output_dir: Path) -> dict:
    """The split through the model (inference.evaluate), then eval_results.json and the confusion matrix written."""
    from vit_scratch import inference
    from vit_scratch.atomic import atomic_path, write_json
    from vit_scratch.data import source_split_name
    from vit_scratch.reporting.figures import plot_confusion_matrix

    results, matrix, names = inference.evaluate(args.model, data_args, args.split, batch_size=args.batch_size,
                                                precision=args.precision, trust_remote_code=args.trust_remote_code,
                                                onnx_file=args.onnx_file if args.backend == "onnxruntime" else None)
    results.update(model=args.model, dataset=data_args.name, split=args.split, precision=args.precision,
                   source_split=source_split_name(data_args, args.split), backend=args.backend)
    if args.backend == "onnxruntime":
        results["onnx_file"] = args.onnx_file
    with atomic_path(output_dir / CONFUSION_FILE) as tmp:
        plot_confusion_matrix(matrix, names, tmp)
    write_json(output_dir / RESULTS_FILE, results)
    return results


def print_summary(results: dict, output_dir: Path) -> None:
    top = next(k for k in results if k.startswith("top_") and k.endswith("_accuracy"))  # top_5_accuracy (k <= K)
    print(f"{results['model']} on {results['dataset']} [{results['split']}], {results['num_images']} images, "
          f"{_how(results)}: accuracy {results['accuracy']:.4f}, top-{top.split('_')[1]} {results[top]:.4f}, "
          f"loss {results['loss']:.4f}")
    per_class = results["per_class_accuracy"]
    if len(per_class) <= 20:
        width = max(map(len, per_class))
        for name, accuracy in per_class.items():
            shown = f"{'-':>8}" if accuracy is None else f"{accuracy:8.4f}"
            print(f"  {name:<{width}} {shown}  ({results['images_per_class'][name]} images)")
    print(f"-> {output_dir / RESULTS_FILE}, {output_dir / CONFUSION_FILE}")


def _how(results: dict) -> str:
    return f"onnxruntime {results['onnx_file']}" if results.get("backend") == "onnxruntime" else results["precision"]


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        experiment = saved_experiment(args.model)
        for key, _ in overrides:
            if not key.startswith("dataset."):
                raise errors.ConfigError(f"--{key}: validate.py takes only --dataset.KEY VALUE overrides")
        data_args = dataset_arguments(experiment, overrides)
        if args.backend == "onnxruntime":
            errors.require_packages(("onnxruntime",), "--backend onnxruntime")
            if args.precision not in (None, "fp32"):
                raise errors.ConfigError(f"--precision {args.precision}: the onnxruntime backend runs the ONNX file "
                                         "as exported (fp32 inputs); drop --precision or use --backend torch")
            args.precision = "fp32"
        args.precision = args.precision or run_precision(experiment)
        output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model, data_args.name,
                                                                                        args.split)
        check_output_dir(output_dir, args.model)
        results = evaluate(args, data_args, output_dir)  # the heavy imports, after every argument passed
    except (errors.ConfigError, errors.DataError, OSError) as err:
        report_error(err)
        return 2
    print_summary(results, output_dir)
    return 0
