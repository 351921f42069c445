"""demo.py: the page in a real browser (Debian's Chromium driven by Playwright) and through gradio_client, with the
network cut to everything but this machine; the example images training writes; the Space folder, its app.py served
from the folder, and its push.

Set VIT_SCRATCH_SCREENSHOT=docs/demo.png to keep the browser test's screenshot there (the README's picture)."""

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from . import hub_standin
from .helpers import CIFAR10_CLASSES, PYTHON, REPO, error_line, free_port, read_json, subprocess_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CAT, AIRPLANE = "03_cat.png", "00_airplane.png"  # examples/ of the tiny run: CIFAR-10 test images
OVERLAY_SIZE = [2 * 256 + 8, 256]  # a 32 x 32 image enlarged to 256, the gap, the same under the heat map


def serve(cmd: list[str], cwd: Path, log: Path, **env) -> tuple[subprocess.Popen, str]:
    """Start a page on a free port (GRADIO_SERVER_PORT: demo.py's --port is passed by the caller when it is
    demo.py) and wait until it answers; (process, its URL)."""
    port = free_port()
    env = subprocess_env(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", **env)
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the page exited {proc.returncode} before serving:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the page did not answer within 240 s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def demo_page(python_run, tmp_path_factory):
    """`demo.py RUN --port P` under tests/netguard.py: any connection to another host fails and is logged."""
    folder = tmp_path_factory.mktemp("demo")
    network_log = folder / "network.log"
    proc, url = serve([PYTHON, "tests/netguard.py", str(network_log), "demo.py", str(python_run), "--port", "{port}"],
                      REPO, folder / "server.log")
    yield SimpleNamespace(url=url, network_log=network_log, log=folder / "server.log")
    stop(proc)


@pytest.fixture(scope="module")
def predicted(python_run, tmp_path_factory) -> dict:
    """predict.py --attention-maps for each example file: {name: top 5}, and the overlays in `predicted["maps"]`.
    One file per call (a batch of one, as the page computes it), on one thread (as the page's process runs), with
    the attention maps: attention weights come from eager attention, whose scores can differ from SDPA's (predict.py
    without maps) in the last bit."""
    from vit_scratch.cli import predict

    folder = tmp_path_factory.mktemp("predict")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {"maps": folder / "maps"}
        for name in (CAT, AIRPLANE):
            assert predict.main([str(python_run), str(python_run / "examples" / name), "--output",
                                 str(folder / f"{name}.json"), "--attention-maps", str(folder / "maps")]) == 0
            results[name] = read_json(folder / f"{name}.json")[0]["predictions"]
    finally:
        torch.set_num_threads(threads)
    return results


def shown_predictions(page) -> list[dict]:
    """gr.Label's bars: each class's name and its score (the <meter> value: the float the server sent)."""
    meters = page.locator("#label meter")
    return [{"label": meters.nth(i).get_attribute("aria-label"), "score": float(meters.nth(i).get_attribute("value"))}
            for i in range(meters.count())]


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("VIT_SCRATCH_BROWSER_REQUIRED"),
                    reason="no chromium: `apt-get install chromium` (.ci/run installs it and requires this test)")
def test_the_page_in_a_browser(demo_page, python_run, predicted, tmp_path):
    """Chromium loads the page, uploads a CIFAR-10 test image and gets predict.py's classes and scores, exactly, and
    the attention overlay; an example click does the same; a broken file gets a message; no request leaves the
    machine, from the browser or from the server."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "no chromium on PATH (VIT_SCRATCH_BROWSER_REQUIRED is set): apt-get install chromium"
    accuracy = read_json(python_run / "all_results.json")["test_accuracy"]
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # root in CI
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(demo_page.url)
            assert page.inner_text("#header h1") == python_run.name
            assert f"Test accuracy: {100 * accuracy:.2f}% on cifar10 (test split)" in page.inner_text("#header")
            page.wait_for_selector("img[src$='09_truck.png']")
            for i, name in enumerate(CIFAR10_CLASSES):  # the examples, one per class
                assert page.locator(f"img[src$='{i:02d}_{name}.png']").count() == 1, name

            page.locator("#image input[type=file]").set_input_files(python_run / "examples" / CAT)
            page.wait_for_selector("#overlay img", timeout=60_000)
            page.wait_for_function("document.querySelectorAll('#label meter').length == 5")
            assert page.inner_text('#label [data-testid="label-output-value"]') == predicted[CAT][0]["label"]
            assert shown_predictions(page) == predicted[CAT]  # labels and scores, to the last bit
            size = page.eval_on_selector("#overlay img", "img => [img.complete, img.naturalWidth, img.naturalHeight]")
            assert size == [True, *OVERLAY_SIZE]
            screenshot = tmp_path / "demo.png"
            page.screenshot(path=screenshot, full_page=True)
            with Image.open(screenshot) as shot:
                assert shot.width == 1280 and shot.height >= 600
            if os.environ.get("VIT_SCRATCH_SCREENSHOT"):
                keep = REPO / os.environ["VIT_SCRATCH_SCREENSHOT"]
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(screenshot, keep)

            page.locator(f"img[src$='{AIRPLANE}']").first.click()  # an example
            deadline = time.monotonic() + 60
            while shown_predictions(page) != predicted[AIRPLANE] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert shown_predictions(page) == predicted[AIRPLANE]

            broken = tmp_path / "broken.png"
            broken.write_text("not an image")
            page.locator("#image input[type=file]").set_input_files(broken)
            toast = page.get_by_text("broken.png is not an image this page can read: try a PNG or JPEG file.")
            toast.wait_for(timeout=60_000)
            assert "Traceback" not in page.content()
        finally:
            browser.close()
    hosts = {request.split("/")[2] for request in requests if not request.startswith(("data:", "blob:"))}
    assert hosts == {demo_page.url.split("/")[2]}, hosts
    assert not demo_page.network_log.exists(), demo_page.network_log.read_text()
    assert "Traceback" not in demo_page.log.read_text()


def test_the_page_through_gradio_client(demo_page, python_run, predicted, tmp_path):
    """The page's API (/classify) gives predict.py's top 5 and its attention map, pixel for pixel; a file that is
    not an image gets the page's message, not a stack trace."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(demo_page.url, analytics_enabled=False, verbose=False, download_files=str(tmp_path))
    label, overlay = client.predict(handle_file(str(python_run / "examples" / CAT)), api_name="/classify")
    assert label["label"] == predicted[CAT][0]["label"]
    assert [{"label": c["label"], "score": c["confidence"]} for c in label["confidences"]] == predicted[CAT]
    with Image.open(overlay) as image, Image.open(predicted["maps"] / CAT) as drawn:
        assert list(image.size) == OVERLAY_SIZE and np.array_equal(np.asarray(image), np.asarray(drawn))
    broken = tmp_path / "notes.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(AppError, match="notes.png is not an image this page can read"):
        client.predict(handle_file(str(broken)), api_name="/classify")
    assert not demo_page.network_log.exists(), demo_page.network_log.read_text()


def test_the_network_guard_catches_a_connection(tmp_path):
    """tests/netguard.py (what the page runs under) refuses and logs a connection to another host."""
    script, log = tmp_path / "call.py", tmp_path / "network.log"
    script.write_text("import socket\n"
                      "for call in (lambda: socket.create_connection(('10.255.255.1', 80), timeout=5),\n"
                      "             lambda: socket.getaddrinfo('huggingface.co', 443)):\n"
                      "    try:\n        call()\n    except OSError as e:\n        print(e)\n")
    proc = subprocess.run([PYTHON, str(REPO / "tests" / "netguard.py"), str(log), str(script)], capture_output=True,
                          text=True, timeout=60, env=subprocess_env())
    assert "netguard: no network to connect ('10.255.255.1', 80)" in proc.stdout, proc.stderr
    assert "netguard: no network to lookup huggingface.co" in proc.stdout
    assert log.read_text() == "connect ('10.255.255.1', 80)\nlookup huggingface.co\n"


# ---------------------------------------------------------------- example images


def test_training_writes_one_test_image_per_class(python_run):
    from vit_scratch.config.schema import DataArguments
    from vit_scratch.data import load_split

    names = sorted(p.name for p in (python_run / "examples").iterdir())
    assert names == [f"{i:02d}_{name}.png" for i, name in enumerate(CIFAR10_CLASSES)]
    dataset = read_json(python_run / "experiment.json")["dataset"]
    test, _ = load_split(DataArguments(**dataset), "test", 32, 3)
    for i, name in enumerate(names):
        first = int(np.argmax(test.labels.numpy() == i))  # the first test image of class i
        with Image.open(python_run / "examples" / name) as image:
            assert image.mode == "RGB" and image.size == (32, 32)
            assert np.array_equal(np.asarray(image).transpose(2, 0, 1), test.images[first].numpy()), name


def test_examples_skip_absent_classes_and_replace_the_folder(tmp_path):
    from vit_scratch.data import ImageSplit
    from vit_scratch.examples import write_examples

    images = torch.arange(4 * 8 * 8, dtype=torch.uint8).reshape(4, 1, 8, 8)  # one channel
    split = ImageSplit(images, torch.tensor([2, 0, 2, 11]))  # classes 0 and 2 present; 11 is past the first ten
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "old.png").write_bytes(b"old")
    names = [f"c{i}" for i in range(12)]
    names[2] = "sea / sky"
    written = write_examples(folder, split, names)
    assert [p.name for p in written] == ["00_c0.png", "02_sea_sky.png"]
    assert oct(folder.stat().st_mode & 0o777) == "0o755" and not list(tmp_path.glob(".examples*"))
    with Image.open(folder / "02_sea_sky.png") as image:
        assert image.mode == "L" and np.array_equal(np.asarray(image), images[0, 0].numpy())
    assert write_examples(folder, None, names) == [] and (folder / "00_c0.png").exists()


# ---------------------------------------------------------------- the command line and the Space


def test_a_model_that_does_not_load_fails_at_start(tmp_path, capsys):
    from vit_scratch.cli import demo

    assert demo.main([str(tmp_path / "nope")]) == 2
    assert error_line(capsys.readouterr().err) == f"error: model {str(tmp_path / 'nope')!r}: no such folder"


@pytest.mark.parametrize("args, message", [
    (["--space", "{tmp}/space"], "is a local folder, and a Space loads its model from the Hub: pass --model-id"),
    (["--space", "{tmp}", "--model-id", "user/tiny"], "already exists; give a new folder"),
])
def test_space_errors_write_nothing(python_run, tmp_path, capsys, args, message):
    from vit_scratch.cli import demo

    before = sorted(tmp_path.iterdir())
    assert demo.main([str(python_run), *[a.replace("{tmp}", str(tmp_path)) for a in args]]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert sorted(tmp_path.iterdir()) == before


def hub_cache(model: Path, repo_id: str, root: Path) -> Path:
    """An HF cache holding `model` as `repo_id`'s main revision: what a Space's first download leaves there."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(model, repo / "snapshots" / revision, ignore=shutil.ignore_patterns("checkpoint-*"))
    return root


def test_the_space_folder_serves_the_same_predictions(python_run, predicted, tmp_path):
    """`demo.py RUN --space DIR --model-id user/tiny` writes a Space whose app.py, run as written from DIR (the
    model in the HF cache under its Hub id, offline), serves predict.py's predictions, header and examples."""
    from huggingface_hub import metadata_load

    from vit_scratch.cli import demo

    space = tmp_path / "space"
    assert demo.main([str(python_run), "--space", str(space), "--model-id", "user/tiny"]) == 0
    assert 'MODEL_ID = "user/tiny"' in (space / "app.py").read_text()
    card = metadata_load(space / "README.md")
    import gradio

    assert card["sdk"] == "gradio" and card["sdk_version"] == gradio.__version__ and card["app_file"] == "app.py"
    assert card["models"] == ["user/tiny"] and card["title"] == "tiny demo"
    pins = dict(line.split("==") for line in (space / "requirements.txt").read_text().splitlines())
    assert pins["torch"] == torch.__version__.split("+")[0] and set(pins) >= {"transformers", "pillow", "numpy"}
    assert (space / "vit_scratch" / "demo.py").read_text() == (REPO / "vit_scratch" / "demo.py").read_text()
    assert (space / "modeling_vit_scratch" / "modeling_vit_scratch.py").is_file()

    from gradio_client import Client, handle_file

    cache = hub_cache(python_run, "user/tiny", tmp_path / "cache")
    proc, url = serve([PYTHON, "app.py"], space, tmp_path / "app.log", HF_HUB_CACHE=str(cache))
    try:
        client = Client(url, analytics_enabled=False, verbose=False, download_files=str(tmp_path / "downloads"))
        label, _ = client.predict(handle_file(str(python_run / "examples" / CAT)), api_name="/classify")
        with urllib.request.urlopen(url + "config", timeout=30) as response:
            config = response.read().decode()
    finally:
        stop(proc)
    assert [{"label": c["label"], "score": c["confidence"]} for c in label["confidences"]] == predicted[CAT]
    accuracy = read_json(python_run / "all_results.json")["test_accuracy"]
    assert f"Test accuracy: {100 * accuracy:.2f}% on cifar10" in config and "09_truck.png" in config


def test_push_space_creates_a_gradio_space(python_run, tmp_path, monkeypatch):
    from vit_scratch.cli import demo

    hub = hub_standin.install(monkeypatch, tmp_path / "hub")
    assert demo.main([str(python_run), "--push-space", "user/tiny-demo", "--model-id", "user/tiny"]) == 0
    assert [(c["repo_id"], c["repo_type"], c["space_sdk"]) for c in hub.created] == [
        ("user/tiny-demo", "space", "gradio")]
    [upload] = hub.uploads
    assert upload.repo_id == "user/tiny-demo" and upload.repo_type == "space"
    assert {"app.py", "requirements.txt", "README.md", "vit_scratch/demo.py"} <= set(upload.files)
    assert 'MODEL_ID = "user/tiny"' in (hub.repo / "app.py").read_text()
