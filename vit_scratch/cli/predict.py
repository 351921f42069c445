"""Classify image files and folders with a saved model; optionally show where it looked (attention rollout).

    python predict.py MODEL IMAGE_OR_FOLDER... [--top-k 5] [--output preds.csv|preds.json] [--batch-size N]
                      [--attention-maps DIR] [--trust-remote-code] [--backend onnxruntime [--onnx-file PATH]]

MODEL is a folder train.py wrote (or any `save_pretrained` folder) or a Hub id. Folders are searched recursively
for image files (sorted); each image is prepared by MODEL's image processor, as `pipeline("image-classification")`
prepares it, and gets the pipeline's scores (softmax probabilities for a single-label model).

--output FILE.csv: path, label_1, score_1, ..., label_k, score_k per image; FILE.json: a list of
{"path", "predictions": [{"label", "score"}, ...]}; neither: a table on stdout. --attention-maps DIR: per image,
DIR/NAME.png, the image under a heat map of its attention rollout (the patches that reach the classifier).
--backend onnxruntime: MODEL's ONNX file (export.py's; --onnx-file onnx/model_quantized.onnx for int8) with
onnxruntime, numpy and Pillow only, the images prepared as the image processor prepares them (no torch imported).
Every input is opened and every output path checked before anything is computed, and the attention maps are moved
into DIR only when all are drawn: a bad input or output stops the run and nothing is written.
"""

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

from vit_scratch import errors
from vit_scratch.cli.args import (
    add_backend,
    add_trust_remote_code,
    positive_int,
    report_error,
    setup_logging,
)

OUTPUT_SUFFIXES = (".csv", ".json")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a saved model folder (train.py's output) or a Hub id")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    parser.add_argument("--top-k", metavar="K", type=positive_int, default=5,
                        help="labels per image (5; at most the number of classes)")
    parser.add_argument("--output", metavar="FILE", type=Path, help="write the predictions to FILE.csv or FILE.json")
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=64, help="images per forward pass (64)")
    parser.add_argument("--attention-maps", type=Path, metavar="DIR", help="write attention-rollout overlays here")
    add_trust_remote_code(parser)
    add_backend(parser)
    args = parser.parse_args(argv)
    if args.backend == "onnxruntime" and args.attention_maps is not None:
        parser.error("--attention-maps needs --backend torch (the ONNX file returns only the logits)")
    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        parser.error(f"--output {args.output}: the file name must end in .csv or .json")
    return args


def write_output(results: list[dict], path: Path) -> None:
    """CSV or JSON by the suffix, written atomically (a temp file in the same folder, then renamed)."""
    from vit_scratch.atomic import atomic_path, write_json

    if path.suffix.lower() == ".json":
        write_json(path, results)
        return
    k = max(len(r["predictions"]) for r in results)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path"] + [f"{what}_{i}" for i in range(1, k + 1) for what in ("label", "score")])
        for r in results:
            writer.writerow([r["path"]] + [x for p in r["predictions"] for x in (p["label"], p["score"])])


def print_table(results: list[dict]) -> None:
    width = max(len(r["path"]) for r in results)
    for r in results:
        print(f"{r['path']:<{width}}  " + "  ".join(f"{p['label']} {p['score']:.3f}" for p in r["predictions"]))


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    staging = None
    try:
        if args.output is not None:
            errors.check_writable(args.output, f"--output {args.output}", folder=False)
        if args.attention_maps is not None:
            errors.check_writable(args.attention_maps, f"--attention-maps {args.attention_maps}", folder=True)
            # Drawn into a hidden folder beside the nearest existing ancestor (the same filesystem: moves are renames).
            existing = next(p for p in args.attention_maps.absolute().parents if p.exists())
            staging = Path(tempfile.mkdtemp(dir=existing, prefix=f".{args.attention_maps.name}."))
        if args.backend == "onnxruntime":  # onnxruntime, numpy and Pillow: no torch is imported
            errors.require_packages(("onnxruntime",), "--backend onnxruntime")
            from vit_scratch import onnx_runtime

            results = onnx_runtime.predict(args.model, args.inputs, top_k=args.top_k, batch_size=args.batch_size,
                                           onnx_file=args.onnx_file)
        else:
            from vit_scratch import inference  # the heavy imports, after the arguments are checked

            results = inference.predict(args.model, args.inputs, top_k=args.top_k, batch_size=args.batch_size,
                                        maps=staging, trust_remote_code=args.trust_remote_code)
        if args.output is not None:
            write_output(results, args.output)
        if staging is not None:
            args.attention_maps.mkdir(parents=True, exist_ok=True)
            for overlay in sorted(staging.iterdir()):
                overlay.replace(args.attention_maps / overlay.name)
    except (errors.ConfigError, errors.DataError, OSError) as err:
        report_error(err)
        return 2
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if args.output is not None:
        print(f"{len(results)} images -> {args.output}", file=sys.stderr)
    else:
        print_table(results)
    if args.attention_maps is not None:
        print(f"attention maps -> {args.attention_maps}/", file=sys.stderr)
    return 0
