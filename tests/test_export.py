"""export.py (ONNX fp32 + int8) and the torch-free predictor behind `--backend onnxruntime`: the files' shape and
checks, equality with the torch backend, no torch imported, the card's ONNX section and its snippet, the push (into
the Hub stand-in), and the `error:` exits that leave nothing behind.

One export of the session's tiny run (1 layer, 32 wide), pushed to the stand-in, serves most tests.
"""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from . import hub_standin
from .helpers import PYTHON, REPO, error_line, read_json, subprocess_env

FP32, INT8 = "onnx/model.onnx", "onnx/model_quantized.onnx"
FAKE_TOKEN = "hf_export_test_token_never_written"


@pytest.fixture(scope="module")
def exported(python_run, tmp_path_factory):
    """A copy of the tiny run, exported in-process (both formats) and pushed to the Hub stand-in:
    (model folder, hub, captured stdout)."""
    from vit_scratch.cli import export

    root = tmp_path_factory.mktemp("export")
    model = root / "model"
    shutil.copytree(python_run, model, ignore=shutil.ignore_patterns("checkpoint-*"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        hub = hub_standin.install(monkeypatch, root / "hub")
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        assert export.main([str(model), "--push-to-hub", "--hub-model-id", "user/vit-onnx"]) == 0
    return model, hub


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Files of several sizes and modes (so the resize and the RGB conversion are exercised)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(1)
    Image.fromarray(np.kron(rng.randint(0, 255, (6, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)).save(root / "a.png")
    Image.fromarray(rng.randint(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "b.png")
    Image.fromarray(rng.randint(0, 255, (45, 29), dtype=np.uint8), "L").save(root / "c.jpg")
    Image.fromarray(rng.randint(0, 255, (20, 36, 4), dtype=np.uint8), "RGBA").save(root / "d.png")
    return root


def without_onnx(card: str) -> str:
    return card[: card.index("## ONNX")] + card[card.index("## Training configuration"):]


def hidden_leftovers(folder):
    return [p for p in folder.rglob(".*") if p.name not in (".gitattributes",)]


# ----------------------------------------------------------------------------------------------- the files


def test_export_writes_both_files_in_the_hub_layout(exported):
    import onnx

    model, _ = exported
    assert sorted(p.name for p in (model / "onnx").iterdir()) == ["model.onnx", "model_quantized.onnx"]  # no data
    assert not hidden_leftovers(model)  # the staging folder is gone
    for name in (FP32, INT8):
        graph = onnx.load(model / name)
        onnx.checker.check_model(graph)
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 18
        assert [i.name for i in graph.graph.input] == ["pixel_values"]
        assert [o.name for o in graph.graph.output] == ["logits"]
        batch, *rest = graph.graph.input[0].type.tensor_type.shape.dim
        assert batch.dim_param and not batch.dim_value, name  # a dynamic batch axis
        assert [d.dim_value for d in rest] == [3, 32, 32]
    ops = {n.op_type for n in onnx.load(model / INT8).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear", "Conv"} <= ops and "ConvInteger" not in ops
    assert (model / INT8).stat().st_size < (model / FP32).stat().st_size


def test_onnx_logits_equal_torch_at_every_batch_size(exported):
    import onnxruntime
    import torch

    from vit_scratch.inference import load_model

    model_dir, _ = exported
    model, _ = load_model(str(model_dir), device=torch.device("cpu"))
    session = onnxruntime.InferenceSession(str(model_dir / FP32), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 17):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(pixel_values=x).logits.numpy()
        got = session.run(None, {"pixel_values": x.numpy()})[0]
        assert got.shape == (batch, 10) and np.abs(got - expected).max() <= 1e-4, batch


def test_a_file_that_fails_its_check_is_not_left_behind(python_run, tmp_path, monkeypatch, capsys):
    from vit_scratch import export as work
    from vit_scratch.cli import export

    model = tmp_path / "model"
    shutil.copytree(python_run, model, ignore=shutil.ignore_patterns("checkpoint-*"))
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    card = (model / "README.md").read_bytes()
    monkeypatch.setattr(work, "FP32_TOLERANCE", -1.0)  # no file can pass
    assert export.main([str(model), "--formats", "fp32"]) == 2
    assert re.fullmatch(r"error: onnx/model.onnx: its logits differ from torch's by up to \S+ \(> -1.0\) on 64 "
                        r"images; nothing was written", error_line(capsys.readouterr().err))
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before  # no onnx/, no staging folder
    assert (model / "README.md").read_bytes() == card


# ----------------------------------------------------------------------------------------------- the card


def test_card_lists_the_files_and_its_snippet_runs_without_torch(exported, images, tmp_path):
    from vit_scratch import onnx_runtime

    model, _ = exported
    card = (model / "README.md").read_text()
    assert card.count("## ONNX") == 1 and card.index("## Usage") < card.index("## ONNX") < card.index(
        "## Training configuration")
    section = card[card.index("## ONNX"): card.index("## Training configuration")]
    assert f"| `{FP32}` | fp32 |" in section and f"| `{INT8}` | int8" in section
    assert "user/vit-onnx" in section  # the repo it was pushed to
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    snippet = snippet.replace('snapshot_download("user/vit-onnx")', repr(str(model)))
    snippet = snippet.replace('"image.png"', repr(str(images / "a.png")))
    code = "import sys\nsys.modules['torch'] = None\nsys.modules['transformers'] = None\n" + snippet
    proc = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = onnx_runtime.predict(str(model), [str(images / "a.png")], top_k=1, batch_size=1)
    assert proc.stdout.strip() == expected[0]["predictions"][0]["label"]


def test_card_section_is_rewritten_in_place(exported, tmp_path):
    from vit_scratch.reporting.card import update_onnx_section

    model, _ = exported
    folder = tmp_path / "copy"
    shutil.copytree(model, folder)
    (folder / INT8).unlink()
    assert update_onnx_section(folder / "README.md", None)
    card = (folder / "README.md").read_text()
    assert card.count("## ONNX") == 1 and INT8 not in card and f"`{FP32}`" in card
    assert without_onnx(card) == without_onnx((model / "README.md").read_text())  # the rest as it was
    assert not update_onnx_section(tmp_path / "nothing" / "README.md", None)  # no card: nothing written


# ----------------------------------------------------------------------------------------------- the push


def test_push_uploads_onnx_and_the_card_to_the_models_repo(exported):
    model, hub = exported
    assert [u.repo_id for u in hub.uploads] == ["user/vit-onnx"]
    assert hub.uploads[0].files == ["README.md", FP32, INT8]
    for name in hub.uploads[0].files:
        assert (hub.repo / name).read_bytes() == (model / name).read_bytes(), name
    leaks = [p for p in (model, hub.root) for p in p.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in
             p.read_bytes()]
    assert not leaks


# ----------------------------------------------------------------------------------------------- the predictor


def test_predictor_prepares_images_exactly_as_the_saved_processor(exported, images):
    from transformers import AutoImageProcessor

    from vit_scratch.image_files import find_images, open_image
    from vit_scratch.onnx_runtime import OnnxClassifier

    model, _ = exported
    ours = OnnxClassifier(str(model))
    opened = [open_image(p) for p in find_images([str(images)])]
    expected = AutoImageProcessor.from_pretrained(model)(images=opened, return_tensors="np")["pixel_values"]
    assert np.array_equal(ours.pixel_values(opened), expected)


def test_onnxruntime_predictions_equal_torch_and_import_no_torch(exported, images, tmp_path):
    """predict.py --backend onnxruntime in a fresh interpreter: torch and transformers never imported; its labels
    and scores are the torch backend's (fp32: top-1 equal, every score within 1e-4; int8: top-1 mostly equal)."""
    from vit_scratch.cli import predict

    model, _ = exported
    code = f"""
import sys
from vit_scratch.cli import predict
for name, onnx_file in (("fp32", {FP32!r}), ("int8", {INT8!r})):
    assert predict.main([{str(model)!r}, {str(images)!r}, "--top-k", "10", "--backend", "onnxruntime",
                         "--onnx-file", onnx_file, "--output", f"{{name}}.json"]) == 0
print(sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules))
"""
    proc = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=subprocess_env(PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr[-3000:]
    assert predict.main([str(model), str(images), "--top-k", "10", "--output", str(tmp_path / "torch.json")]) == 0
    reference = read_json(tmp_path / "torch.json")
    fp32, int8 = read_json(tmp_path / "fp32.json"), read_json(tmp_path / "int8.json")
    assert [r["path"] for r in fp32] == [r["path"] for r in reference] and len(reference) == 4
    for ours, theirs in zip(fp32, reference, strict=True):
        assert ours["predictions"][0]["label"] == theirs["predictions"][0]["label"], ours["path"]
        by_label = {p["label"]: p["score"] for p in theirs["predictions"]}
        assert max(abs(p["score"] - by_label[p["label"]]) for p in ours["predictions"]) <= 1e-4
    assert all(len(r["predictions"]) == 10 for r in int8)


def test_validate_backend_onnxruntime_equals_torch(exported, tmp_path, capsys):
    from vit_scratch.cli import validate

    model, _ = exported
    results = {}
    for name, extra in (("torch", []), ("fp32", ["--backend", "onnxruntime"]),
                        ("int8", ["--backend", "onnxruntime", "--onnx-file", INT8])):
        assert validate.main([str(model), "--output-dir", str(tmp_path / name), *extra]) == 0
        results[name] = read_json(tmp_path / name / "eval_results.json")
    out = capsys.readouterr().out
    assert f"onnxruntime {INT8}: accuracy" in out
    torch_, fp32, int8 = results["torch"], results["fp32"], results["int8"]
    assert torch_["num_images"] == fp32["num_images"] == int8["num_images"] == 64
    assert fp32["accuracy"] == torch_["accuracy"] and fp32["confusion_matrix"] == torch_["confusion_matrix"]
    assert fp32["loss"] == pytest.approx(torch_["loss"], abs=1e-5)
    assert (fp32["backend"], fp32["onnx_file"], int8["onnx_file"]) == ("onnxruntime", FP32, INT8)
    assert abs(int8["accuracy"] - torch_["accuracy"]) <= 3 / 64  # 64 images: a few may flip
    assert int8["loss"] != fp32["loss"]  # it is the int8 file that ran


# ----------------------------------------------------------------------------------------------- errors


def test_export_to_another_folder_carries_the_config_and_no_card(exported, python_run, tmp_path, capsys):
    from vit_scratch import onnx_runtime
    from vit_scratch.cli import export

    out = tmp_path / "served"
    assert export.main([str(python_run), "--output", str(out), "--formats", "int8"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "config.json", "onnx", INT8, "preprocessor_config.json"]
    assert not (python_run / "onnx").exists()  # the model's folder is untouched
    model, _ = exported
    assert (out / INT8).stat().st_size == (model / INT8).stat().st_size
    assert onnx_runtime.OnnxClassifier(str(out), INT8).id2label[0] == "airplane"
    # another model's config there is never overwritten
    (out / "config.json").write_text("{}")
    assert export.main([str(python_run), "--output", str(out)]) == 2
    assert "holds another model's config.json" in error_line(capsys.readouterr().err)
    assert (out / "config.json").read_text() == "{}" and not (out / FP32).exists()


@pytest.mark.parametrize("case", ["not a model", "hub id without --output", "output under a file",
                                  "missing extra", "push without a repo", "push offline"])
def test_export_errors_exit_2_and_write_nothing(case, python_run, tmp_path, monkeypatch, capsys):
    from vit_scratch.cli import export

    model = tmp_path / "model"
    shutil.copytree(python_run, model, ignore=shutil.ignore_patterns("checkpoint-*"))
    (tmp_path / "file").write_text("x")
    argv, expected = {
        "not a model": ([str(tmp_path / "empty")], "error: model '{tmp}/empty': "),
        "hub id without --output": (["user/some-model"], "error: model 'user/some-model' is a Hub id: pass --output "
                                                         "DIR (where onnx/ goes)"),
        "output under a file": ([str(model), "--output", str(tmp_path / "file" / "out")],
                                "error: --output {tmp}/file/out: cannot create it ({tmp}/file is a file, not a "
                                "folder)"),
        "missing extra": ([str(model)], 'error: export.py needs onnxscript, not installed: `pip install -e '
                                        '".[export]"` (the `export` extra)'),
        "push without a repo": ([str(model), "--push-to-hub"], "error: --push-to-hub: which repo? pass --hub-model-id"),
        "push offline": ([str(model), "--push-to-hub", "--hub-model-id", "user/x"],
                         "error: --push-to-hub: the Hub cannot be used: "),
    }[case]
    if case == "not a model":
        (tmp_path / "empty").mkdir()
    if case == "missing extra":
        monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    before = sorted(tmp_path.rglob("*"))
    assert export.main(argv) == 2
    assert error_line(capsys.readouterr().err).startswith(expected.format(tmp=tmp_path))
    assert sorted(tmp_path.rglob("*")) == before


def test_backend_errors_exit_2(python_run, images, tmp_path, monkeypatch, capsys):
    """No ONNX file in the folder (names export.py), onnxruntime missing (names the extra), --precision bf16 with
    the ONNX backend: one line, exit 2, nothing written."""
    from vit_scratch.cli import predict, validate

    out = tmp_path / "p.json"
    assert predict.main([str(python_run), str(images), "--backend", "onnxruntime", "--output", str(out)]) == 2
    assert error_line(capsys.readouterr().err) == (f"error: model {str(python_run)!r}: no {FP32} (write it with "
                                                   f"`python export.py {python_run}`)")
    assert validate.main([str(python_run), "--backend", "onnxruntime", "--precision", "bf16", "--output-dir",
                          str(tmp_path / "v")]) == 2
    assert "--precision bf16: the onnxruntime backend runs the ONNX file" in error_line(capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert predict.main([str(python_run), str(images), "--backend", "onnxruntime", "--output", str(out)]) == 2
    assert error_line(capsys.readouterr().err) == ('error: --backend onnxruntime needs onnxruntime, not installed: '
                                                   '`pip install -e ".[export]"` (the `export` extra)')
    assert not list(tmp_path.iterdir())


def test_export_help_imports_nothing_heavy():
    code = """
import runpy, sys
sys.argv = ["export.py", "--help"]
try:
    runpy.run_path("export.py", run_name="__main__")
except SystemExit as exit:
    assert exit.code == 0, exit.code
print(sorted(m for m in ("torch", "transformers", "onnx", "onnxruntime", "numpy") if m in sys.modules))
"""
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("[]"), proc.stderr[-2000:]
    assert "--push-to-hub" in proc.stdout and "onnx/model_quantized.onnx" in proc.stdout


def test_pt2_format_is_an_exported_program_equal_to_torch(python_run, tmp_path):
    import torch

    from vit_scratch.cli import export
    from vit_scratch.inference import load_model

    out = tmp_path / "pt2"
    assert export.main([str(python_run), "--output", str(out), "--formats", "pt2"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "config.json", "preprocessor_config.json", "pt2", "pt2/model.pt2"]
    program = torch.export.load(str(out / "pt2" / "model.pt2")).module()
    model, _ = load_model(str(python_run), device=torch.device("cpu"))
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            assert (program(x) - model(pixel_values=x).logits).abs().max() <= 1e-5
