"""Classify image files and folders with a saved model; optionally show where it looked (attention rollout).

    python predict.py MODEL IMAGE_OR_FOLDER... [--top-k 5] [--output preds.csv|preds.json] [--batch-size N]
                      [--attention-maps DIR] [--trust-remote-code]

MODEL is a folder train.py wrote (or any `save_pretrained` folder) or a Hub id. Folders are searched recursively
for image files (sorted); each image is prepared by MODEL's image processor, as `pipeline("image-classification")`
prepares it, and gets the pipeline's scores (softmax probabilities for a single-label model).

--output FILE.csv: path, label_1, score_1, ..., label_k, score_k per image; FILE.json: a list of
{"path", "predictions": [{"label", "score"}, ...]}; neither: a table on stdout. --attention-maps DIR: per image,
DIR/NAME.png, the image under a heat map of its attention rollout (the patches that reach the classifier).
Every input is opened and every output path checked before anything is computed, and the attention maps are moved
into DIR only when all are drawn: a bad input or output stops the run and nothing is written.
"""

import argparse
import csv
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from train import light_import, report_error
from validate import add_trust_remote_code, positive_int

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
    args = parser.parse_args(argv)
    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        parser.error(f"--output {args.output}: the file name must end in .csv or .json")
    return args


def predict(args: argparse.Namespace, maps: Path | None) -> list[dict]:
    """[{"path", "predictions": [{"label", "score"}, ...]}] for every image; the overlays go into `maps`."""
    from vit_scratch import inference

    paths = inference.find_images(args.inputs)
    inference.check_images(paths)
    model, processor = inference.load_model(args.model, trust_remote_code=args.trust_remote_code)
    config = model.config
    top_k = min(args.top_k, config.num_labels)
    names = iter(inference.overlay_names(paths))
    results = []
    for batch in inference.batches(paths, args.batch_size):
        images = [inference.open_image(path, config.num_channels) for path in batch]
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        logits, attentions = inference.forward(model, pixel_values, output_attentions=maps is not None)
        top = inference.scores(logits, config).topk(top_k, dim=-1)
        for path, values, ids in zip(batch, top.values.tolist(), top.indices.tolist(), strict=True):
            results.append({"path": str(path), "predictions": [{"label": config.id2label[i], "score": v}
                                                               for v, i in zip(values, ids, strict=True)]})
        if attentions is not None:
            weights = inference.attention_rollout(attentions, getattr(config, "pooling", "cls"))
            for image, weight in zip(images, weights, strict=True):
                inference.save_attention_overlay(image, weight, maps / next(names))
    return results


def write_output(results: list[dict], path: Path) -> None:
    """CSV or JSON by the suffix, written atomically (a temp file in the same folder, then renamed)."""
    from vit_scratch.reporting.figures import atomic_path, write_json

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
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _, errors = light_import()
    staging = None
    try:
        if args.output is not None:
            errors.check_writable(args.output, f"--output {args.output}", folder=False)
        if args.attention_maps is not None:
            errors.check_writable(args.attention_maps, f"--attention-maps {args.attention_maps}", folder=True)
            # Drawn into a hidden folder beside the nearest existing ancestor (the same filesystem: moves are renames).
            existing = next(p for p in args.attention_maps.absolute().parents if p.exists())
            staging = Path(tempfile.mkdtemp(dir=existing, prefix=f".{args.attention_maps.name}."))
        results = predict(args, staging)  # the heavy imports, after the arguments are checked
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


if __name__ == "__main__":
    sys.exit(main())
