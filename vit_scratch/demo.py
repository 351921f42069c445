"""The demo page of a saved model (Gradio), and the Space folder that serves it on the Hub.

`build_page(MODEL)` loads the model once and lays out the page: the header (the model's name, its test accuracy and
dataset, from its model card), an image input, the top-k classes (`gr.Label`) and the attention-rollout overlay,
both computed by `inference.classify` / `inference.attention_overlay` exactly as `predict.py` computes them, and the
example images training wrote into `examples/`. `launch` serves it offline: no analytics, no font or script from
another host. `write_space` writes a Gradio Space folder whose `app.py` builds the same page from the model's Hub id.
"""

import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio starts and at every launch: never phone home

import gradio as gr  # noqa: E402
from huggingface_hub import ModelCard, snapshot_download  # noqa: E402

from vit_scratch import inference  # noqa: E402
from vit_scratch.atomic import atomic_folder  # noqa: E402
from vit_scratch.errors import DataError  # noqa: E402
from vit_scratch.examples import EXAMPLES_DIR  # noqa: E402

logger = logging.getLogger("vit_scratch")

# A 32 x 32 upload is shown enlarged, its pixels sharp (as the overlay shows them).
CSS = "#image img { object-fit: contain !important; image-rendering: pixelated; }"
# System fonts: gradio's default theme loads its fonts from fonts.googleapis.com.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
# What `write_space` copies beside app.py: the page's code, the model's code.
PACKAGES = ("vit_scratch", "modeling_vit_scratch")
# A Space's requirements.txt pins these at the versions running here; the Space installs gradio itself (sdk_version).
SPACE_REQUIREMENTS = ("torch", "transformers", "huggingface_hub", "safetensors", "datasets", "numpy", "pillow",
                      "matplotlib")


# ---------------------------------------------------------------- what the page shows about the model


def model_files(source: str) -> Path | None:
    """The folder holding MODEL's card and examples: MODEL itself, or those files of a Hub repo (downloaded, or
    from the cache offline). None when the repo's files cannot be fetched: the page then has no header or examples."""
    if Path(source).is_dir():
        return Path(source)
    try:
        return Path(snapshot_download(source, allow_patterns=["README.md", f"{EXAMPLES_DIR}/*"]))
    except Exception as error:  # offline and not cached, a private repo, ...
        logger.warning("demo: no model card or examples for %s (%s)", source, type(error).__name__)
        return None


def short_name(source: str) -> str:
    """A folder's name, or the Hub id."""
    return Path(source).resolve().name if Path(source).is_dir() else source


def header(source: str, folder: Path | None) -> str:
    """`# NAME` and a line `Test accuracy: 91.23% on DATASET (split)` from the model card's results."""
    name, line = short_name(source), "Test accuracy: not reported"
    card = folder / "README.md" if folder is not None else None
    if card is not None and card.is_file():
        data = ModelCard.load(card).data
        name = data.model_name or name
        for result in data.eval_results or ():
            if result.metric_type == "accuracy" and result.dataset_split in ("test", None):
                split = f" ({result.dataset_split} split)" if result.dataset_split else ""
                line = f"Test accuracy: {100 * result.metric_value:.2f}% on {result.dataset_name}{split}"
                break
    return f"# {name}\n{line}. Drop an image, or click an example: its top classes and where the model looked " \
           "(attention rollout)."


def example_images(folder: Path | None) -> list[str]:
    examples = folder / EXAMPLES_DIR if folder is not None else None
    return sorted(str(p) for p in examples.glob("*.png")) if examples is not None and examples.is_dir() else []


# ---------------------------------------------------------------- the page


def build_page(source: str, top_k: int = 5, trust_remote_code: bool = False) -> gr.Blocks:
    """The page for MODEL (a saved folder or a Hub id). Raises ConfigError when the model does not load."""
    model, processor = inference.load_model(source, trust_remote_code=trust_remote_code)
    channels = model.config.num_channels
    folder = model_files(source)

    def classify(upload: dict | str | None):
        """The uploaded file as gradio received it, or an example's path (preprocess=False: the page opens the file,
        so that one that is not an image gets a message instead of gradio's own error) -> {label: score}, overlay."""
        if upload is None:
            return None, None
        path = Path(upload if isinstance(upload, str) else upload["path"])
        name = path.name if isinstance(upload, str) else upload.get("orig_name") or path.name
        try:
            image = inference.open_image(path, channels)
        except DataError:
            raise gr.Error(f"{name} is not an image this page can read: try a PNG or JPEG file.",
                           title="Not an image", print_exception=False) from None
        predictions, weights = inference.classify(model, processor, [image], top_k=top_k, rollout=True)
        scores = {p["label"]: p["score"] for p in predictions[0]}
        return scores, inference.attention_overlay(image, weights[0])

    def classify_example(path: str):  # its own name: the API endpoint of an event is its function's name
        return classify(path)

    with gr.Blocks(title=f"{short_name(source)} demo", analytics_enabled=False) as page:
        gr.Markdown(header(source, folder), elem_id="header")
        label = gr.Label(num_top_classes=top_k, label="Top classes", elem_id="label", render=False)
        overlay = gr.Image(label="Attention rollout (the image, and where the model looked)", type="pil",
                           format="png", interactive=False, height=280, elem_id="overlay", render=False)
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Image", sources=["upload"], height=280,
                                 elem_id="image")
                if examples := example_images(folder):
                    gr.Examples(examples=examples, inputs=image, outputs=[label, overlay], fn=classify_example,
                                run_on_click=True, cache_examples=False,
                                label="Examples (test images, one per class)", examples_per_page=len(examples))
            with gr.Column():
                label.render()
                overlay.render()
        # `upload`, not `change`: `change` ran the model twice per upload (two messages for one bad file).
        image.upload(classify, inputs=image, outputs=[label, overlay], preprocess=False, api_name="classify")
        image.clear(lambda: (None, None), outputs=[label, overlay], api_visibility="private")
    return page


def launch(page: gr.Blocks, host: str | None = None, port: int | None = None, **kwargs) -> None:
    """Serve the page (host and port: gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when None, as on a Space).
    A proxy set in the environment must not catch the page's requests to itself."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's requests to itself, one line each
    local = ["localhost", "127.0.0.1"]
    for variable in ("NO_PROXY", "no_proxy"):
        given = [h for h in os.environ.get(variable, "").split(",") if h]
        os.environ[variable] = ",".join(given + [h for h in local if h not in given])
    page.launch(server_name=host, server_port=port, theme=THEME, css=CSS, ssr_mode=False, show_error=True, **kwargs)


# ---------------------------------------------------------------- the Space


APP = '''"""The demo page of {model_id} (written by vit-scratch's `demo.py --space`): `python app.py`."""

from vit_scratch.demo import build_page, launch

MODEL_ID = "{model_id}"

if __name__ == "__main__":
    launch(build_page(MODEL_ID))
'''

SPACE_CARD = """---
title: {title}
emoji: 🔭
colorFrom: blue
colorTo: indigo
sdk: gradio
sdk_version: {gradio}
app_file: app.py
models:
- {model_id}
pinned: false
---

# {title}

The demo page of [{model_id}](https://huggingface.co/{model_id}), a Vision Transformer from vit-scratch: drop an
image to get its top classes and the attention-rollout overlay (where the model looked).
"""


def space_requirements() -> str:
    """Exact pins of the installed versions (a local build tag such as +cpu dropped)."""
    return "".join(f"{name}=={importlib.metadata.version(name).split('+')[0]}\n" for name in SPACE_REQUIREMENTS)


def write_space(model_id: str, folder: Path) -> list[str]:
    """A Gradio Space serving `model_id`'s page in `folder` (written whole, atomically): app.py, requirements.txt,
    README.md (the Space's front matter) and the code the page runs."""
    with atomic_folder(folder) as staging:
        (staging / "app.py").write_text(APP.format(model_id=model_id), encoding="utf-8")
        (staging / "requirements.txt").write_text(space_requirements(), encoding="utf-8")
        title = f"{model_id.rsplit('/', 1)[-1]} demo"
        (staging / "README.md").write_text(SPACE_CARD.format(title=title, model_id=model_id,
                                                             gradio=gr.__version__), encoding="utf-8")
        for package in PACKAGES:
            source = Path(__import__(package).__file__).parent
            shutil.copytree(source, staging / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def push_space(model_id: str, space_id: str, folder: Path | None = None, token: str | None = None) -> str:
    """Create the Space `space_id` (gradio SDK; kept if it exists) and upload the folder `write_space` wrote (into
    `folder`, or a temporary one). Returns the Space's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as scratch:
        if folder is None:
            folder = Path(scratch) / "space"
            write_space(model_id, folder)
        url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", exist_ok=True)
        api.upload_folder(repo_id=url.repo_id, repo_type="space", folder_path=str(folder),
                          commit_message=f"Demo page of {model_id}")
    return str(url)
