"""Export a saved model to ONNX (fp32 and int8) for serving without PyTorch.

    python export.py MODEL [--output DIR] [--formats fp32 int8] [--images FILE_OR_FOLDER ...]
                     [--push-to-hub] [--hub-model-id USER/NAME]

MODEL is a folder train.py wrote or a Hub id (then --output is needed). Writes the Hub's layout into MODEL's folder
(or --output DIR, with MODEL's config.json and preprocessor_config.json beside, which the torch-free predictor
reads): onnx/model.onnx (fp32: input pixel_values with any batch size, output logits, opset 18, one file) and
onnx/model_quantized.onnx (int8: dynamic quantization of the MatMul/Gemm weights, the patch convolution in fp32);
`--formats pt2` adds pt2/model.pt2 (torch.export's ExportedProgram, for PyTorch-native serving).

Each file is checked on real images before it is kept: the run's first 256 test images (from MODEL's
experiment.json) or --images. fp32 and pt2 must give torch's logits within 1e-4 (else nothing is written); int8's
top-1 agreement with torch is printed. The folder's model card (README.md, when there is one) gets an ONNX section
listing the files and how to run them. --push-to-hub uploads the files and that card to the model's Hub repo
(--hub-model-id, else MODEL when it is a Hub id, else the run's training.hub_model_id).

Run them: `predict.py MODEL IMAGES --backend onnxruntime [--onnx-file onnx/model_quantized.onnx]`,
`validate.py MODEL --backend onnxruntime [...]`. Needs the `export` extra (pip install -e ".[export]").
"""

import argparse
import json
import sys
from pathlib import Path

from vit_scratch import errors
from vit_scratch.cli.args import report_error, setup_logging
from vit_scratch.sources import is_local_path

FORMATS = ("fp32", "int8", "pt2")  # vit_scratch.export.FILES
EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a saved model folder (train.py's output) or a Hub id")
    parser.add_argument("--output", metavar="DIR", type=Path, help="where onnx/ goes (default: MODEL's folder)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS[:2]),
                        help="fp32 (onnx/model.onnx), int8 (onnx/model_quantized.onnx), pt2 (pt2/model.pt2, "
                        "torch.export); default fp32 int8")
    parser.add_argument("--images", nargs="+", metavar="FILE_OR_FOLDER",
                        help="real images to check the files on (default: the run's first 256 test images)")
    parser.add_argument("--push-to-hub", action="store_true", help="upload the files (and the updated card) to the Hub")
    parser.add_argument("--hub-model-id", metavar="USER/NAME", help="the repo --push-to-hub uploads to")
    return parser.parse_args(argv)


def hub_repo(args: argparse.Namespace) -> str | None:
    """The model's Hub repo: --hub-model-id, MODEL when it is a Hub id, or the run's training.hub_model_id."""
    if args.hub_model_id or not is_local_path(args.model):
        return args.hub_model_id or args.model
    try:
        training = json.loads((Path(args.model).expanduser() / "experiment.json").read_text()).get("training", {})
    except (OSError, ValueError, AttributeError):
        return None
    repo = training.get("hub_model_id") if isinstance(training, dict) else None
    return repo if isinstance(repo, str) and "/" in repo else None


def check_hub(repo_id: str | None) -> None:
    """Before any work: a repo to push to, and a Hub that answers (a token, not offline)."""
    if repo_id is None:
        raise errors.ConfigError("--push-to-hub: which repo? pass --hub-model-id USER/NAME (MODEL is a folder whose "
                                 "run set no training.hub_model_id)")
    from huggingface_hub import HfApi

    try:
        HfApi().whoami()
    except Exception as err:  # no token, offline mode, no network, a refused token: all end the same way
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise errors.ConfigError(f"--push-to-hub: the Hub cannot be used: {reason} (log in with `hf auth login` or "
                                 "set HF_TOKEN; HF_HUB_OFFLINE=1 forbids any push)") from None


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        errors.require_packages(EXPORT_PACKAGES, "export.py")
        if args.output is None and not is_local_path(args.model):
            raise errors.ConfigError(f"model {args.model!r} is a Hub id: pass --output DIR (where onnx/ goes)")
        output = args.output or Path(args.model).expanduser()
        errors.check_writable(output, f"--output {output}", folder=True)
        repo_id = hub_repo(args)
        if args.push_to_hub:
            check_hub(repo_id)
        from vit_scratch import export  # the heavy imports, after the arguments are checked
        from vit_scratch.reporting.card import update_onnx_section

        report = export.export(args.model, output, formats=args.formats, images=args.images)
        card = update_onnx_section(output / "README.md", repo_id)
        if args.push_to_hub:
            export.push(output, repo_id, [info["file"] for info in report.values()] + ["README.md"] * card)
    except (errors.ConfigError, errors.DataError, OSError) as err:
        report_error(err)
        return 2
    for name, info in report.items():
        check = (f"top-1 agreement with torch {100 * info['top1_agreement']:.2f}%" if name == "int8" else
                 f"max |logit diff| to torch {info['max_abs_logit_diff']:.2g}")
        print(f"{name}: {output / info['file']} ({info['bytes'] / 1e6:.1f} MB; {check} on {info['check_images']} "
              "images)")
    if card:
        print(f"model card: {output / 'README.md'} (ONNX section)")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/{repo_id}")
    return 0
