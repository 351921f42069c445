"""validate.py and predict.py (and training/inference.py under them): numbers checked against independent computations
(training's own reported results, a forward pass on images decoded here, `pipeline`), the attention rollout on
hand-made attentions, the files they write, and the `error:` exits that must leave nothing behind.

Models are tiny (32 wide, one layer) and built here or trained here for 4 steps; data is the first 48-64 images of
the local CIFAR-10 copy or a few generated files. Most runs call `main(argv)` in-process; one of each CLI runs as a
subprocess, as users run it.
"""

import csv
import io
import json
import shutil
import subprocess
import types

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from .helpers import (
    CIFAR10_CLASSES,
    PYTHON,
    REPO,
    TINY_MODEL,
    assert_png,
    check_ok,
    error_line,
    read_json,
    subprocess_env,
    tiny_config,
    train_in_process,
)

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}


def run(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    """`python ARGS` as a user runs it; a script name resolves against the repo, whatever `cwd` is."""
    args = [str(REPO / a) if a.endswith(".py") and (REPO / a).is_file() else a for a in args]
    return subprocess.run([PYTHON, *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)


def save_tiny_model(folder, class_names=CIFAR10_CLASSES, pooling="cls", seed=0):
    """A ViTScratch classifier (32 wide, 1 layer, 2 heads, 32 px, 8 px patches) and its image processor, saved as
    train.py saves them. The head is scaled up so that predictions are decisive (no near-ties between labels)."""
    from modeling_vit_scratch import ViTScratchForImageClassification
    from vit_scratch.training.run import build_image_processor, with_labels

    config = tiny_config(patch_size=8, pooling=pooling)  # 8 px patches: 16 tokens, a readable attention map
    config = with_labels(config, list(class_names))
    torch.manual_seed(seed)
    model = ViTScratchForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(40)
    model.save_pretrained(folder)
    build_image_processor(config, types.SimpleNamespace(mean=MEAN, std=STD)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, cifar10_path):
    """train.py (in-process) for 4 steps on 64 CIFAR-10 images, 32 held out for validation, 48 test images."""
    out = tmp_path_factory.mktemp("trained") / "out"
    argv = ["--config", str(REPO / "configs" / "cifar10.json"), "--dataset.name", str(cifar10_path),
            "--dataset.validation_size", "32", "--dataset.max_train_samples", "64", "--dataset.max_test_samples",
            "48", "--training.max_steps", "4", "--training.per_device_train_batch_size", "16",
            "--training.output_dir", str(out), *TINY_MODEL]
    assert train_in_process(argv) == 0
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Generated images of several sizes and modes, in a folder and a subfolder, and a file that is not an image."""
    root = tmp_path_factory.mktemp("images") / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.RandomState(0)
    smooth = np.kron(rng.randint(0, 255, (6, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 48 x 40, blocky
    Image.fromarray(smooth).save(root / "a.png")
    Image.fromarray(rng.randint(0, 255, (32, 32), dtype=np.uint8), "L").save(root / "sub" / "b.jpg")
    Image.fromarray(rng.randint(0, 255, (20, 36, 4), dtype=np.uint8), "RGBA").save(root / "sub" / "a.png")
    (root / "notes.txt").write_text("not an image")
    return root


def no_temp_files(folder):
    return not list(folder.rglob("*.tmp"))


# ----------------------------------------------------------------------------------------------- --help


def test_help_is_fast_and_imports_nothing_heavy():
    code = """
import runpy, sys
for script in ("validate.py", "predict.py"):
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        assert exit.code == 0, exit.code
heavy = sorted(m for m in ("torch", "transformers", "datasets", "numpy") if m in sys.modules)
assert not heavy, heavy
"""
    proc = check_ok(run("-c", code))
    assert "--dataset.KEY" in proc.stdout and "--attention-maps" in proc.stdout
    assert "dataset.max_test_samples  (int | None, default None)" in proc.stdout  # validate lists its keys
    assert "training." not in proc.stdout.split("config keys", 1)[1]  # and only those


def test_cli_argument_errors_exit_2_before_anything_loads(tiny_model, tmp_path):
    """As processes: a bad key or suffix answers in a fraction of a second, exit 2, one line, nothing written."""
    proc = run("validate.py", str(tiny_model), "--dataset.nmae", "x", "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and error_line(proc.stderr) == "error: unknown key dataset.nmae; did you mean 'name'?"
    proc = run("predict.py", str(tiny_model), str(tiny_model / "config.json"), "--output", str(tmp_path / "p.txt"))
    assert proc.returncode == 2 and "--output" in proc.stderr and "must end in .csv or .json" in proc.stderr
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------- validate.py


def test_validate_reproduces_the_numbers_training_reported(trained_model, tmp_path):
    """`--split test` gives training's test_* and `--split validation` its eval_* (the same held-out rows, read from
    the run's experiment.json): same decoding, same normalisation, so accuracy equal and losses equal to 1e-6."""
    from vit_scratch.cli import validate

    reported = read_json(trained_model / "all_results.json")
    for split, prefix in (("test", "test_"), ("validation", "eval_")):
        out = tmp_path / split
        assert validate.main([str(trained_model), "--split", split, "--output-dir", str(out)]) == 0
        results = read_json(out / "eval_results.json")
        assert results["num_images"] == {"test": 48, "validation": 32}[split]
        assert results["accuracy"] == reported[f"{prefix}accuracy"]
        assert results["top_5_accuracy"] == reported[f"{prefix}top_5_accuracy"]
        assert results["loss"] == pytest.approx(reported[f"{prefix}loss"], abs=1e-6)
        assert results["split"] == split and results["source_split"] == {"test": "test", "validation": "train"}[split]
        assert results["precision"] == "fp32"  # the run trained (and so evaluated) in fp32


def test_validate_evaluates_in_the_precision_the_run_evaluated_in(trained_model, tmp_path):
    """A bf16 run's reported numbers come from bf16 autocast (the Trainer evaluates as it trains; on an H100 fp32
    gave 0.7242 where the run reported 0.7249): validate.py follows experiment.json's training.bf16 unless told."""
    import torch

    from vit_scratch import inference
    from vit_scratch.cli import validate

    run = tmp_path / "bf16_run"
    shutil.copytree(trained_model, run)
    experiment = read_json(run / "experiment.json")
    experiment["training"]["bf16"] = True
    (run / "experiment.json").write_text(json.dumps(experiment))
    calls = []
    real_autocast = torch.autocast

    def autocast(device_type, dtype=None, enabled=True):
        calls.append((dtype, enabled))
        return real_autocast(device_type, dtype=dtype, enabled=enabled)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference.torch, "autocast", autocast)
        assert validate.main([str(run), "--output-dir", str(tmp_path / "a")]) == 0
        assert read_json(tmp_path / "a" / "eval_results.json")["precision"] == "bf16"
        assert calls and all(call == (torch.bfloat16, True) for call in calls)
        calls.clear()
        assert validate.main([str(run), "--precision", "fp32", "--output-dir", str(tmp_path / "b")]) == 0
        assert calls and all(enabled is False for _, enabled in calls)
    fp32, bf16 = (read_json(tmp_path / d / "eval_results.json") for d in ("b", "a"))
    assert fp32["accuracy"] == read_json(run / "all_results.json")["test_accuracy"]  # it did train in fp32
    assert bf16["loss"] == pytest.approx(fp32["loss"], abs=0.05) and bf16["loss"] != fp32["loss"]


def test_validate_cli_equals_an_independent_forward_pass(tiny_model, cifar10_path, tmp_path):
    """The CLI as users run it, on 50 test images in batches of 16 (a partial last batch), against images decoded
    here from the parquet file (PIL, no data.py) and normalised by preprocessor_config.json; the default output
    folder is made in the current folder."""
    from modeling_vit_scratch import ViTScratchForImageClassification

    proc = check_ok(run("validate.py", str(tiny_model), "--dataset.name", str(cifar10_path),
                        "--dataset.max_test_samples", "50", "--batch-size", "16", cwd=tmp_path))
    out = tmp_path / f"validate-{tiny_model.name}-cifar10-test"  # in the current folder, never in the model's
    results = read_json(out / "eval_results.json")
    assert "requires torchvision" not in proc.stderr  # the saved processor loads as the PIL one, without a warning
    assert_png(out / "confusion_matrix.png")
    assert no_temp_files(tiny_model)

    table = pq.read_table(next(cifar10_path.rglob("test-*.parquet"))).slice(0, 50).to_pydict()
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(img["bytes"])).convert("RGB")) for img in table["img"]])
    labels = torch.tensor(table["label"])
    processor = read_json(tiny_model / "preprocessor_config.json")
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(processor["image_mean"]).view(1, 3, 1, 1)) / torch.tensor(processor["image_std"]).view(
        1, 3, 1, 1)
    model = ViTScratchForImageClassification.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        logits = model(x).logits
    predicted = logits.argmax(-1)
    assert results["num_images"] == 50
    assert results["accuracy"] == pytest.approx((predicted == labels).double().mean().item(), abs=1e-12)
    top5 = (logits.topk(5, dim=-1).indices == labels[:, None]).any(-1).double().mean().item()
    assert results["top_5_accuracy"] == pytest.approx(top5, abs=1e-12)
    assert results["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), abs=1e-5)

    matrix = np.array(results["confusion_matrix"])
    expected = np.zeros((10, 10), dtype=int)
    np.add.at(expected, (labels.numpy(), predicted.numpy()), 1)
    assert (matrix == expected).all()
    for i, name in enumerate(CIFAR10_CLASSES):
        assert results["images_per_class"][name] == (labels == i).sum().item()
        if matrix[i].sum():
            assert results["per_class_accuracy"][name] == pytest.approx(matrix[i, i] / matrix[i].sum())
        else:
            assert results["per_class_accuracy"][name] is None
    assert set(results) >= {"model", "dataset", "split"} and results["dataset"] == str(cifar10_path)
    assert f"accuracy {results['accuracy']:.4f}" in proc.stdout and "eval_results.json" in proc.stdout


def test_validate_refuses_a_model_of_other_classes(tmp_path, cifar10_path, capsys):
    from vit_scratch.cli import validate

    renamed = CIFAR10_CLASSES[:3] + ["kitten"] + CIFAR10_CLASSES[4:]
    for names, message in ((renamed, "class 3 is 'cat' in the dataset but 'kitten' in the model's id2label"),
                           (CIFAR10_CLASSES[:3], "has 10 classes (airplane, ")):
        model = save_tiny_model(tmp_path / f"model{len(names)}", class_names=names)
        out = tmp_path / "out"
        assert validate.main([str(model), "--dataset.name", str(cifar10_path), "--dataset.max_test_samples", "8",
                              "--output-dir", str(out)]) == 2
        assert message in error_line(capsys.readouterr().err)
        assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--dataset.nmae", "x"], "unknown key dataset.nmae; did you mean 'name'?"),
    (["--dataset.validation_size", "-1"], "dataset.validation_size=-1 is invalid"),
    (["--model.hidden_size", "64"], "--model.hidden_size: validate.py takes only --dataset.KEY VALUE overrides"),
    (["--split", "valid"], "split 'valid': "),
    (["--output-dir", "{model}"], "a model folder; its files would be overwritten"),
    (["--output-dir", "{file}"], "a file; expected a folder"),  # found before the evaluation, not after it
    (["--output-dir", "/proc/run"], "--output-dir /proc/run: cannot create it (making a folder in /proc fails: "),
    (["--output-dir", "{file}/run"], "/file/run: cannot create it ("),  # the folder's parent is a file
])
def test_validate_errors_name_the_problem_and_write_nothing(tiny_model, tmp_path, cifar10_path, capsys, args,
                                                            message):
    from vit_scratch.cli import validate

    before = sorted(p.name for p in tiny_model.iterdir())
    (tmp_path / "file").write_text("x")
    args = [a.replace("{model}", str(tiny_model)).replace("{file}", str(tmp_path / "file")) for a in args]
    output = [] if "--output-dir" in args else ["--output-dir", str(tmp_path / "out")]
    assert validate.main([str(tiny_model), "--dataset.name", str(cifar10_path), *output, *args]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tiny_model.iterdir()) == before


def test_validate_missing_model_folder(tmp_path, capsys):
    from vit_scratch.cli import validate

    assert validate.main([str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out")]) == 2
    assert error_line(capsys.readouterr().err) == f"error: model {str(tmp_path / 'nope')!r}: no such folder"
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- predict.py


def test_predict_matches_pipeline_in_csv_and_json(tiny_model, image_folder, tmp_path):
    """Folders are searched recursively (sorted; notes.txt skipped); labels and scores are the pipeline's."""
    from transformers import pipeline

    from vit_scratch.cli import predict

    csv_path, json_path = tmp_path / "preds.csv", tmp_path / "deep" / "preds.json"
    for output in (csv_path, json_path):
        assert predict.main([str(tiny_model), str(image_folder), "--top-k", "3", "--batch-size", "2",
                             "--output", str(output)]) == 0
    expected_paths = [str(image_folder / "a.png"), str(image_folder / "sub" / "a.png"),
                      str(image_folder / "sub" / "b.jpg")]
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "label_1", "score_1", "label_2", "score_2", "label_3", "score_3"]
    from_json = read_json(json_path)
    assert [r[0] for r in rows[1:]] == [r["path"] for r in from_json] == expected_paths

    classify = pipeline("image-classification", model=str(tiny_model), trust_remote_code=True)
    for row, entry in zip(rows[1:], from_json, strict=True):
        reference = classify(entry["path"], top_k=3)
        assert [p["label"] for p in entry["predictions"]] == [r["label"] for r in reference] == row[1::2]
        for ours, theirs, text in zip(entry["predictions"], reference, row[2::2], strict=True):
            assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)
            assert float(text) == pytest.approx(theirs["score"], abs=1e-4)
        assert sum(p["score"] for p in entry["predictions"]) <= 1 + 1e-6
    assert no_temp_files(tmp_path)


def test_predict_cli_prints_a_table_and_writes_attention_overlays(tiny_model, image_folder, tmp_path, capsys):
    """In this process (predict.py as a process: test_cli_argument_errors_exit_2_before_anything_loads)."""
    from vit_scratch.cli import predict

    maps = tmp_path / "maps"
    assert predict.main([str(tiny_model), str(image_folder / "sub"), str(image_folder / "a.png"), "--top-k", "2",
                         "--attention-maps", str(maps)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [str(image_folder / "sub" / "a.png"),
                                                   str(image_folder / "sub" / "b.jpg"), str(image_folder / "a.png")]
    assert all(len(line.split()) == 5 for line in lines)  # path, then 2 x (label, score)
    # Named after the images (the second a.png gets -2); small images enlarged to >= 256 pixels on their long side,
    # shown as they are and, 8 pixels to the right, under the heat map.
    assert sorted(p.name for p in maps.iterdir()) == ["a-2.png", "a.png", "b.png"]
    assert_png(maps / "a.png", size=(2 * 252 + 8, 140))  # sub/a.png: 36 x 20, x7
    assert_png(maps / "b.png", size=(2 * 256 + 8, 256))
    assert_png(maps / "a-2.png", size=(2 * 200 + 8, 240))  # a.png: 40 x 48, x5
    with Image.open(maps / "a-2.png") as pair:
        left = np.asarray(pair.convert("RGB"))[:, :200]
    with Image.open(image_folder / "a.png") as original:
        enlarged = np.asarray(original.convert("RGB").resize((200, 240), Image.Resampling.NEAREST))
    assert (left == enlarged).all()  # the left half is the image itself


@pytest.mark.parametrize("case", ["missing", "not_an_image", "truncated_in_folder", "bad_suffix", "output_is_a_folder",
                                  "maps_is_a_file", "fails_after_the_maps"])
def test_predict_errors_write_nothing(tiny_model, image_folder, tmp_path, capsys, monkeypatch, case):
    from vit_scratch.cli import predict

    inputs, message = [str(image_folder)], None
    if case == "missing":
        inputs, message = [str(image_folder / "a.png"), str(tmp_path / "nope.png")], "nope.png: no such file or folder"
    elif case == "not_an_image":
        inputs, message = [str(image_folder / "notes.txt")], "notes.txt: not a readable image"
    elif case == "truncated_in_folder":
        folder = tmp_path / "in"
        folder.mkdir()
        (folder / "good.png").write_bytes((image_folder / "a.png").read_bytes())
        (folder / "bad.png").write_bytes((image_folder / "a.png").read_bytes()[:100])
        inputs, message = [str(folder)], "bad.png: not a readable image"
    output = tmp_path / ("preds.txt" if case == "bad_suffix" else "preds.csv")
    maps = tmp_path / "maps"
    if case == "output_is_a_folder":
        output.mkdir()
        message = f"--output {output}: a folder; expected a file name"
    elif case == "maps_is_a_file":
        maps.write_text("not a folder")
        message = f"--attention-maps {maps}: a file; expected a folder"
    elif case == "fails_after_the_maps":  # every overlay drawn, then the CSV cannot be written
        monkeypatch.setattr(predict, "write_output", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
        message = "disk full"
    argv = [str(tiny_model), *inputs, "--output", str(output), "--attention-maps", str(maps)]
    if case == "bad_suffix":
        with pytest.raises(SystemExit) as exit:
            predict.main(argv)
        assert exit.value.code == 2 and "must end in .csv or .json" in capsys.readouterr().err
    else:
        assert predict.main(argv) == 2
        assert message in error_line(capsys.readouterr().err)
    assert output.is_dir() if case == "output_is_a_folder" else not output.exists()
    assert maps.is_file() if case == "maps_is_a_file" else not maps.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


# ----------------------------------------------------------------------------------------------- rollout


def layers_of(*matrices, heads=2):
    """Per-layer attentions (1, heads, T, T) from (T, T) matrices, every head the same."""
    return [torch.as_tensor(m, dtype=torch.float32).expand(1, heads, *np.shape(m)) for m in matrices]


def test_rollout_of_identity_attention_is_the_identity():
    from vit_scratch.inference import attention_rollout

    eye = torch.eye(5)
    assert torch.equal(attention_rollout(layers_of(eye, eye, eye)), torch.zeros(1, 4))  # CLS keeps to itself
    assert torch.allclose(attention_rollout(layers_of(eye), pooling="mean"), torch.full((1, 4), 0.25))


def test_rollout_of_uniform_attention_is_uniform_over_the_patches():
    from vit_scratch.inference import attention_rollout

    uniform = torch.full((5, 5), 0.2)
    for pooling in ("cls", "mean"):
        weights = attention_rollout(layers_of(uniform, uniform), pooling=pooling)[0]
        assert torch.allclose(weights, weights[0].expand(4)) and weights[0] > 0


def test_rollout_follows_the_pooled_token():
    """CLS attends only to patch 2, every patch token only to patch 3: CLS pooling points at patch 2 (through the
    residual, patch 2 then draws on patch 3 as well), mean pooling at patch 3. Averaged heads: one head attending
    elsewhere halves, not erases, the signal."""
    from vit_scratch.inference import attention_rollout

    a = torch.zeros(5, 5)
    a[0, 3] = 1  # token 3 = patch 2
    a[1:, 4] = 1  # token 4 = patch 3
    cls = attention_rollout(layers_of(a, a), pooling="cls")[0]
    assert cls.argmax() == 2 and cls[0] == cls[1] == 0
    assert attention_rollout(layers_of(a, a), pooling="mean")[0].argmax() == 3
    two_heads = torch.stack([a, torch.eye(5)]).unsqueeze(0)  # head 0 as above, head 1 the identity
    assert attention_rollout([two_heads])[0].argmax() == 2
    rollout_rows = attention_rollout([two_heads, two_heads])
    assert rollout_rows.sum() < 1  # the CLS column keeps the rest: every row of the rollout sums to 1


def test_rollout_of_a_real_model_is_a_distribution(tiny_model):
    from vit_scratch import inference

    model, processor = inference.load_model(str(tiny_model), torch.device("cpu"))
    pixel_values = processor(images=[Image.new("RGB", (32, 32), (200, 30, 30))], return_tensors="pt")["pixel_values"]
    logits, attentions = inference.forward(model, pixel_values, output_attentions=True)
    assert len(attentions) == 1 and attentions[0].shape == (1, 2, 17, 17)
    assert torch.allclose(attentions[0].sum(-1), torch.ones(1, 2, 17), atol=1e-5)  # real attention: rows sum to 1
    weights = inference.attention_rollout(attentions)
    # One layer: the CLS row of (mean over heads + identity), rows renormalised, without its CLS column.
    a = attentions[0].mean(1) + torch.eye(17)
    expected = (a / a.sum(-1, keepdim=True))[:, 0, 1:]
    assert weights.shape == (1, 16) and torch.allclose(weights, expected, atol=1e-6)
    assert (weights > 0).all() and 0 < weights.sum() < 1  # the rest of the row stays on the CLS token itself
    assert torch.allclose(logits, inference.forward(model, pixel_values)[0], atol=1e-5)  # eager = SDPA


def test_precision_names_agree():
    from vit_scratch import inference
    from vit_scratch.backends import PRECISIONS

    assert PRECISIONS == tuple(inference.AUTOCAST_DTYPES)


def test_another_models_code_runs_only_when_trusted(tmp_path, capsys):
    """A folder whose config asks for its own code: refused without --trust-remote-code (as transformers does), with
    nothing executed; a vit_scratch folder never needs the flag (the tests above load one without it)."""
    from vit_scratch.cli import predict

    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "someone_elses", "auto_map": {
        "AutoConfig": "configuration_x.XConfig", "AutoModelForImageClassification": "modeling_x.XModel"}}))
    (folder / "configuration_x.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('code ran')\n")
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    assert predict.main([str(folder), str(image)]) == 2
    assert "needs its own code to load: pass --trust-remote-code" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------------------------- the manifest

MODEL_FILES = {"model.safetensors", "config.json", "preprocessor_config.json", "configuration_vit_scratch.py",
               "modeling_vit_scratch.py"}


def test_the_final_model_carries_a_manifest_of_what_loading_needs(trained_model, tmp_path, image_folder, capsys):
    """train.py's folder: the manifest lists the files the model loads from, not those added beside it (card,
    results, figures; later an onnx/ export, examples): a folder that gains files still loads."""
    from vit_scratch.cli import predict

    listed = set(read_json(trained_model / "manifest.json")["files"])
    assert listed == MODEL_FILES
    folder = tmp_path / "model"
    shutil.copytree(trained_model, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"exported later")
    (folder / "README.md").write_text("a card edited by hand")
    assert predict.main([str(folder), str(image_folder / "a.png")]) == 0


@pytest.mark.parametrize("damage", ["flipped weights", "edited preprocessor", "no manifest"])
def test_validate_and_predict_refuse_a_model_whose_files_do_not_match_its_manifest(trained_model, tmp_path,
                                                                                   image_folder, capsys, damage):
    """One `error:` line, exit 2, naming the file; transformers' own from_pretrained still loads what it can. A folder
    without a manifest (someone else's model) loads as before."""
    from transformers import AutoModelForImageClassification

    from vit_scratch.cli import predict, validate

    folder = tmp_path / "model"
    shutil.copytree(trained_model, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    if damage == "flipped weights":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[len(data) // 2] ^= 0xFF  # inside the tensor data: safetensors reads it without complaint
        (folder / "model.safetensors").write_bytes(bytes(data))
        expected = "model.safetensors does not match its checksum in manifest.json (its bytes changed)"
    elif damage == "edited preprocessor":
        processor = read_json(folder / "preprocessor_config.json")
        processor["image_mean"] = [0.0, 0.0, 0.0]
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
        expected = "preprocessor_config.json has "
    else:
        (folder / "manifest.json").unlink()
        expected = None
    AutoModelForImageClassification.from_pretrained(folder)  # plain transformers: its own contract
    if expected is None:
        assert predict.main([str(folder), str(image_folder / "a.png")]) == 0
        return
    for main, argv in ((predict.main, [str(folder), str(image_folder / "a.png")]),
                       (validate.main, [str(folder), "--output-dir", str(tmp_path / "val")])):
        assert main(argv) == 2
        line = error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {folder}: the model's files do not match its manifest.json: {expected}"), line
    assert not (tmp_path / "val").exists()
