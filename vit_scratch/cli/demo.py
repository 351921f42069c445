"""A demo page for a saved model, in the browser; or a Hugging Face Space that serves it.

    python demo.py MODEL [--host 127.0.0.1] [--port 7860] [--top-k 5] [--trust-remote-code]
    python demo.py MODEL --space DIR [--model-id USER/NAME]
    python demo.py MODEL --push-space USER/NAME [--space DIR] [--model-id USER/NAME]

MODEL is a folder train.py wrote (or any `save_pretrained` folder) or a Hub id. The page (Gradio): drop or pick an
image and see its top classes with their scores (as predict.py gives them) and its attention-rollout overlay (as
predict.py --attention-maps draws it); the example images training wrote into MODEL/examples/ are there to click,
and the header gives the model's name, test accuracy and dataset from its model card. It runs offline: no analytics,
no request to any other host.

--space DIR writes a Gradio Space folder: app.py (loads the model by its Hub id), requirements.txt (pinned),
README.md (the Space's front matter) and the page's code. The Hub id is MODEL, or --model-id when MODEL is a local
folder (the repo it was pushed to). --push-space USER/NAME creates that Space (gradio SDK) and uploads the folder.
"""

import argparse
import re
import sys
from pathlib import Path

from vit_scratch import errors
from vit_scratch.cli.args import add_trust_remote_code, positive_int, report_error, setup_logging

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def port_number(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return value


def hub_id(text: str) -> str:
    if not HUB_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Hub id (USER/NAME)")
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a saved model folder (train.py's output) or a Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1; 0.0.0.0: every one)")
    parser.add_argument("--port", type=port_number, default=7860, help="port to serve on (7860)")
    parser.add_argument("--top-k", metavar="K", type=positive_int, default=5,
                        help="classes shown per image (5; at most the number of classes)")
    parser.add_argument("--space", type=Path, metavar="DIR", help="write a Gradio Space folder here (a new folder)")
    parser.add_argument("--push-space", type=hub_id, metavar="USER/NAME", help="create this Space and upload it")
    parser.add_argument("--model-id", type=hub_id, metavar="USER/NAME",
                        help="the Hub id the Space loads (default: MODEL, when it is not a local folder)")
    add_trust_remote_code(parser)
    return parser.parse_args(argv)


def space_model_id(args: argparse.Namespace) -> str:
    if args.model_id is not None:
        return args.model_id
    if Path(args.model).exists() or not HUB_ID.fullmatch(args.model):
        raise errors.ConfigError(f"{args.model} is a local folder, and a Space loads its model from the Hub: pass "
                                 "--model-id USER/NAME (the repo it was pushed to)")
    return args.model


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.space is not None or args.push_space is not None:
            model_id = space_model_id(args)
            if args.space is not None:
                if args.space.exists():
                    raise errors.ConfigError(f"--space {args.space}: already exists; give a new folder")
                errors.check_writable(args.space, f"--space {args.space}", folder=True)
            from vit_scratch import demo  # gradio, after the arguments are checked

            if args.space is not None:
                files = demo.write_space(model_id, args.space)
                print(f"Space for {model_id} ({len(files)} files) -> {args.space}/", file=sys.stderr)
            if args.push_space is not None:
                try:
                    url = demo.push_space(model_id, args.push_space, args.space)
                except Exception as error:  # the Hub's answer: no token, no right to write, offline, ...
                    first = (str(error).strip().splitlines() or [""])[0]
                    raise errors.ConfigError(f"--push-space {args.push_space}: {type(error).__name__}: {first}") \
                        from None
                print(f"Space -> {url}", file=sys.stderr)
            return 0
        from vit_scratch import demo

        page = demo.build_page(args.model, top_k=args.top_k, trust_remote_code=args.trust_remote_code)
    except (errors.ConfigError, errors.DataError, OSError) as err:
        report_error(err)
        return 2
    demo.launch(page, host=args.host, port=args.port)
    return 0
