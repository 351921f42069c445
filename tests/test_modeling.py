"""ViTScratch as a `transformers` model: shapes, loss, gradients, Trainer, save/load, Auto, remote code, pipeline,
attention backends, gradient checkpointing, position-encoding interpolation and parity with transformers' ViT."""

import inspect
import json
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    pipeline,
)

import modeling_vit_scratch
from modeling_vit_scratch import (
    ViTScratchConfig,
    ViTScratchForImageClassification,
    ViTScratchModel,
    convert_from_transformers_vit,
)

from .helpers import TINY, remote_code_probe

PACKAGE_DIR = os.path.dirname(modeling_vit_scratch.__file__)
LABELS = {0: "airplane", 1: "bird", 2: "cat", 3: "dog", 4: "ship"}
B = 4


def tiny_config(**overrides) -> ViTScratchConfig:
    """helpers.TINY with 2 layers (a stack: per-layer outputs, drop-path's rate is 0 at the first block) of 4 heads
    of 8 (more than a pair of heads to split and merge), 5 labels, no dropout unless asked."""
    kwargs = dict(image_size=32, patch_size=4, **TINY, hidden_dropout_prob=0.0, id2label=LABELS,
                  label2id={v: k for k, v in LABELS.items()})
    kwargs.update({"num_hidden_layers": 2, "num_attention_heads": 4, **overrides})
    return ViTScratchConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> ViTScratchForImageClassification:
    torch.manual_seed(seed)
    return ViTScratchForImageClassification(tiny_config(**overrides))


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int = 1, scale: float = 0.1) -> None:
    """Make every tensor non-trivial (biases non-zero, LayerNorm weights != 1) so that any mix-up shows."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=generator) * scale)


def images(batch: int = B, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- shapes & pooling


def test_output_shapes_eager():
    model = tiny_model(attn_implementation="eager").eval()
    out = model(images(), output_hidden_states=True, output_attentions=True)
    tokens = (32 // 4) ** 2 + 1
    assert out.logits.shape == (B, len(LABELS))
    assert out.loss is None
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert all(h.shape == (B, tokens, 32) for h in out.hidden_states)
    assert len(out.attentions) == model.config.num_hidden_layers
    assert all(a.shape == (B, 4, tokens, tokens) for a in out.attentions)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(B, 4, tokens))  # rows are distributions
    assert model(images(), return_dict=False)[0].shape == (B, len(LABELS))

    base = model.vit(images(), output_hidden_states=True)
    assert base.last_hidden_state.shape == (B, tokens, 32) and base.pooler_output.shape == (B, 32)
    assert base.attentions is None


def test_output_attentions_under_sdpa_falls_back_to_eager(caplog):
    """transformers' contract: asking for attention weights never raises; SDPA cannot return them, so that call runs
    eager attention, with the eager model's results, and says so once."""
    from transformers.utils import logging as hf_logging

    sdpa, eager = tiny_model(attn_implementation="sdpa").eval(), tiny_model(attn_implementation="eager").eval()
    perturb_(sdpa)
    eager.load_state_dict(sdpa.state_dict())
    hf_logging.warning_once.cache_clear()  # "once per process": an earlier test in this process may have said it
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            out = sdpa(images(), output_attentions=True)
            again = sdpa(images(), output_attentions=True)
    finally:
        hf_logging.disable_propagation()
    reference = eager(images(), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (B, 4, 65, 65)
    for ours, theirs in zip(out.attentions, reference.attentions, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.logits, reference.logits, rtol=0, atol=1e-6)
    assert torch.equal(again.logits, out.logits)
    assert caplog.text.count("cannot return attention weights") == 1  # once per process
    assert sdpa.config._attn_implementation == "sdpa"  # the model itself is unchanged
    assert sdpa(images()).attentions is None


@pytest.mark.parametrize("problem_type, labels, expected", [
    ("regression", lambda logits: torch.randn(B), lambda logits, y: F.mse_loss(logits.squeeze(-1), y)),
    ("multi_label_classification", lambda logits: (torch.rand(B, 5) > 0.5).float(),
     lambda logits, y: F.binary_cross_entropy_with_logits(logits, y)),
    ("single_label_classification", lambda logits: torch.tensor([0, 1, 2, 3]),
     lambda logits, y: F.cross_entropy(logits, y)),
    ("single_label_classification", lambda logits: torch.softmax(torch.randn(B, 5), -1),
     lambda logits, y: torch.sum(-y * F.log_softmax(logits, -1), -1).mean()),
    (None, lambda logits: torch.tensor([0, 1, 2, 3]), lambda logits, y: F.cross_entropy(logits, y)),
    (None, lambda logits: torch.softmax(torch.randn(B, 5), -1),  # unset: float (B, K) = soft targets (mixup)
     lambda logits, y: torch.sum(-y * F.log_softmax(logits, -1), -1).mean()),
])
def test_problem_type_is_honoured_and_never_written(problem_type, labels, expected):
    num_labels = 1 if problem_type == "regression" else 5
    kwargs = {"num_labels": 1, "id2label": {0: "value"}, "label2id": {"value": 0}} if num_labels == 1 else {}
    model = tiny_model(problem_type=problem_type, **kwargs).eval()
    torch.manual_seed(0)
    logits = model(images()).logits
    y = labels(logits)
    loss = model(images(), labels=y).loss
    torch.testing.assert_close(loss, expected(logits.float(), y))
    loss.backward()
    assert model.config.problem_type == problem_type  # read, never set


def test_wrong_channel_count_raises():
    with pytest.raises(ValueError, match="1 channels; the model expects 3"):
        tiny_model()(images(channels=1))


def test_cls_and_mean_pooling():
    cls_model = tiny_model(pooling="cls").eval()
    perturb_(cls_model)
    mean_model = ViTScratchForImageClassification(tiny_config(pooling="mean")).eval()
    mean_model.load_state_dict(cls_model.state_dict())  # same weights, only the pooling differs
    x = images()
    cls_out, mean_out = cls_model.vit(x), mean_model.vit(x)
    torch.testing.assert_close(cls_out.last_hidden_state, mean_out.last_hidden_state)
    torch.testing.assert_close(cls_out.pooler_output, cls_out.last_hidden_state[:, 0])
    torch.testing.assert_close(mean_out.pooler_output, mean_out.last_hidden_state[:, 1:].mean(1))
    cls_logits, mean_logits = cls_model(x).logits, mean_model(x).logits
    assert cls_logits.shape == mean_logits.shape == (B, len(LABELS))
    assert (cls_logits - mean_logits).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------------ loss


def test_integer_label_loss_is_cross_entropy():
    model = tiny_model().eval()
    labels = torch.tensor([0, 3, 4, 1])
    out = model(images(), labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))


def test_soft_label_loss_is_soft_target_cross_entropy():
    model = tiny_model().eval()
    soft = torch.softmax(torch.randn(B, len(LABELS), generator=torch.Generator().manual_seed(3)), dim=-1)
    out = model(images(), labels=soft)
    log_p = torch.log_softmax(out.logits, dim=-1)
    expected = -(soft * log_p).sum(dim=1).mean()
    torch.testing.assert_close(out.loss, expected)
    assert model.config.problem_type is None  # never rewritten (would e.g. turn the pipeline's softmax to sigmoid)


def test_one_hot_soft_labels_equal_integer_loss():
    model = tiny_model().eval()
    x, labels = images(), torch.tensor([2, 2, 0, 4])
    hard = model(x, labels=labels).loss
    soft = model(x, labels=F.one_hot(labels, len(LABELS)).float()).loss
    torch.testing.assert_close(soft, hard)
    assert model.config.problem_type is None


@pytest.mark.parametrize(
    "labels",
    [torch.zeros(B, 1, dtype=torch.long), torch.zeros(B + 1, dtype=torch.long), torch.zeros(B),
     torch.zeros(B, len(LABELS) + 1), torch.zeros(B + 1, len(LABELS))],
    ids=["int-(B,1)", "int-(B+1,)", "float-(B,)", "float-(B,K+1)", "float-(B+1,K)"],
)
def test_wrong_label_shapes_raise(labels):
    with pytest.raises(ValueError, match="labels must have shape"):
        tiny_model()(images(), labels=labels)


# ------------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(pooling="mean"), dict(drop_path_rate=0.1, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)],
    ids=["cls", "mean", "drop_path"],
)
def test_every_parameter_gets_a_gradient(overrides):
    model = tiny_model(**overrides).train()
    model(images(8), labels=torch.arange(8) % len(LABELS)).loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_drop_path_rates_rise_linearly_and_act_only_in_training():
    model = tiny_model(num_hidden_layers=3, drop_path_rate=0.2)
    assert [layer.drop_path.drop_prob for layer in model.vit.layers] == pytest.approx([0.0, 0.1, 0.2])
    model.eval()
    x = images()
    torch.testing.assert_close(model(x).logits, model(x).logits)  # deterministic in eval


# ------------------------------------------------------------------------------------------------- Trainer


def test_forward_signature_and_trainer(tmp_path):
    params = inspect.signature(ViTScratchForImageClassification.forward).parameters
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values())
    assert "labels" in params and params["labels"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(ViTScratchModel.forward).parameters.values())

    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [{"pixel_values": images(1, seed=i)[0], "labels": i % len(LABELS)} for i in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=2,
                             per_device_train_batch_size=4, save_strategy="no", logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    assert trainer.model_accepts_loss_kwargs is False
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert not torch.equal(before["classifier.weight"], model.state_dict()["classifier.weight"])


# -------------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model().eval()
    perturb_(model)  # what is saved is not what a fresh initialisation would give
    model.save_pretrained(tmp_path)

    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "configuration_vit_scratch.py", "modeling_vit_scratch.py"} <= files
    assert not [f for f in files if f.endswith(".bin")]
    for name in ("configuration_vit_scratch.py", "modeling_vit_scratch.py"):
        with open(tmp_path / name) as saved, open(os.path.join(PACKAGE_DIR, name)) as source:
            assert saved.read() == source.read()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vit_scratch"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vit_scratch.ViTScratchConfig",
        "AutoModel": "modeling_vit_scratch.ViTScratchModel",
        "AutoModelForImageClassification": "modeling_vit_scratch.ViTScratchForImageClassification",
    }

    loaded, info = ViTScratchForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not loaded.training
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for key, value in saved_state.items():
        assert torch.equal(value, loaded_state[key]), f"{key} was re-initialised or altered on load"
    x = images()
    assert torch.equal(model(x).logits, loaded(x).logits)


def test_partial_load_initialises_only_what_is_missing(tmp_path):
    """A module with some tensors loaded and some not is re-initialised tensor by tensor: `init.*` skips the loaded
    ones (a `.data` write in `_init_weights` would overwrite them)."""
    model = tiny_model()
    perturb_(model)
    model.save_pretrained(tmp_path)
    saved = model.state_dict()
    # patch 8: the patch projection's weight and the position embeddings change shape; their siblings do not.
    loaded, info = ViTScratchForImageClassification.from_pretrained(
        tmp_path, patch_size=8, ignore_mismatched_sizes=True, output_loading_info=True
    )
    reinitialised = {"vit.embeddings.patch_embeddings.projection.weight", "vit.embeddings.position_embeddings"}
    assert {key for key, *_ in info["mismatched_keys"]} == reinitialised
    for key, value in loaded.state_dict().items():
        if key in reinitialised:
            assert value.shape != saved[key].shape and 0.012 < value.std().item() < 0.028, key
        else:
            assert torch.equal(value, saved[key]), f"{key} was loaded, then overwritten by the initialisation"


def test_base_model_save_maps_automodel(tmp_path):
    ViTScratchModel(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_vit_scratch.ViTScratchModel"


def test_fresh_initialisation():
    model = tiny_model(initializer_range=0.02)
    for name, param in model.named_parameters():
        if "layernorm" in name:
            expected = torch.ones_like(param) if name.endswith("weight") else torch.zeros_like(param)
            assert torch.equal(param, expected), name
        elif name.endswith("bias"):
            assert torch.equal(param, torch.zeros_like(param)), name
        else:  # truncated normal, std 0.02: not PyTorch's default kaiming-uniform (std ~ 1/sqrt(3 fan_in) ~ 0.1)
            assert 0.012 < param.std().item() < 0.028, (name, param.std().item())


# -------------------------------------------------------------------------------------------------- Auto


def test_auto_classes(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is ViTScratchConfig
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path)) is ViTScratchForImageClassification
    assert type(AutoModel.from_config(tiny_config())) is ViTScratchModel
    assert type(AutoModelForImageClassification.from_config(tiny_config())) is ViTScratchForImageClassification
    assert type(AutoConfig.for_model("vit_scratch", hidden_size=32, num_hidden_layers=1)) is ViTScratchConfig


def test_remote_code_loads_without_the_package(tmp_path):
    model = tiny_model().eval()
    perturb_(model)
    folder = tmp_path / "vit-scratch-remote"
    model.save_pretrained(folder)
    x = images()
    report = remote_code_probe(folder, tmp_path / "probe", inputs=x)
    assert report["importable"] == [] and report["ours_imported"] == [], report
    assert report["refused"].startswith("ValueError: ") and "trust_remote_code=True" in report["refused"], report
    assert report["cls"] == "ViTScratchForImageClassification" and report["module"].startswith("transformers_modules.")
    assert report["code_in_modules_cache"], report
    assert report["backbone_cls"] == "ViTScratchModel" and report["backbone_module"].startswith("transformers_modules.")
    with torch.no_grad():
        expected, pooled = model(x).logits, model.vit(x).pooler_output
    torch.testing.assert_close(report["logits"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(report["pooled"], pooled, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ pipeline


def test_image_classification_pipeline(tmp_path):
    model = tiny_model().eval()
    perturb_(model, scale=0.3)  # spread the scores so the top label is unambiguous
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without torchvision ViTImageProcessor falls back to its PIL backend
        processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.49, 0.48, 0.45],
                                                   image_std=[0.25, 0.24, 0.26], do_resize=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)  # resized by the processor
    Image.fromarray(pixels).save(tmp_path / "img.png")

    classifier = pipeline("image-classification", model=str(tmp_path), device="cpu")
    assert type(classifier.model) is ViTScratchForImageClassification
    results = classifier(str(tmp_path / "img.png"), top_k=None)
    assert sorted(r["label"] for r in results) == sorted(LABELS.values())
    assert sum(r["score"] for r in results) == pytest.approx(1.0, abs=1e-5)

    with torch.no_grad():
        logits = model(**processor(Image.open(tmp_path / "img.png"), return_tensors="pt")).logits[0]
    probs = logits.softmax(-1)
    assert results[0]["label"] == LABELS[int(probs.argmax())]
    assert results[0]["score"] == pytest.approx(probs.max().item(), abs=1e-5)
    for r in results:
        assert r["score"] == pytest.approx(probs[model.config.label2id[r["label"]]].item(), abs=1e-5)


# --------------------------------------------------------------------- attention backends, checkpointing, sizes


def test_eager_equals_sdpa():
    eager = tiny_model(attn_implementation="eager").eval()
    perturb_(eager)
    sdpa = ViTScratchForImageClassification(tiny_config(attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    assert (eager.config._attn_implementation, sdpa.config._attn_implementation) == ("eager", "sdpa")
    x = images()
    a, b = eager(x, output_hidden_states=True), sdpa(x, output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)
    for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(ha, hb, rtol=0, atol=1e-5)


def grads(model, x, labels) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x, labels=labels).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")
@pytest.mark.parametrize("enable", ["gradient_checkpointing_enable", "activation_checkpointing_enable"])
def test_gradient_checkpointing_gives_same_gradients(enable):
    model = tiny_model(drop_path_rate=0.0, attention_probs_dropout_prob=0.0).train()
    perturb_(model)
    x, labels = images(), torch.tensor([0, 1, 2, 3])
    reference = grads(model, x, labels)

    getattr(model, enable)()  # the 4.x name (deprecated alias in 5.x) and its 5.x successor
    assert model.is_activation_checkpointing
    calls = []
    for layer in model.vit.layers:  # count the checkpointed calls: the test must fail if checkpointing is bypassed
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, _f=inner, **k: calls.append(1) or _f(*a, **k)
    checkpointed = grads(model, x, labels)
    assert len(calls) == model.config.num_hidden_layers
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_interpolate_pos_encoding_at_64():
    model = tiny_model().eval()
    x = images(size=64)
    out = model(x, interpolate_pos_encoding=True, output_hidden_states=True)
    assert out.logits.shape == (B, len(LABELS))
    assert out.hidden_states[-1].shape == (B, (64 // 4) ** 2 + 1, 32)
    with pytest.raises(ValueError, match=r"64x64.*32x32.*interpolate_pos_encoding=True"):
        model(x)
    # At the native size interpolation is the identity.
    torch.testing.assert_close(model(images(), interpolate_pos_encoding=True).logits, model(images()).logits)


# ------------------------------------------------------------------------------- parity with transformers' ViT


def transformers_vit(impl: str, **overrides) -> ViTForImageClassification:
    """transformers' ViT of tiny_config's size (helpers.TINY, 2 layers of 4 heads), without dropout."""
    kwargs = dict(image_size=32, patch_size=4, **TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  num_labels=5, attn_implementation=impl)
    kwargs.update({"num_hidden_layers": 2, "num_attention_heads": 4, **overrides})
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**kwargs)).eval()
    perturb_(model)
    assert model.config._attn_implementation == impl
    return model


def assert_parity(theirs, ours, x, interpolate: bool = False):
    with torch.no_grad():
        a = theirs(x, output_hidden_states=True, interpolate_pos_encoding=interpolate)
        b = ours(x, output_hidden_states=True, interpolate_pos_encoding=interpolate)
    assert (a.logits - b.logits).abs().max().item() <= 1e-5
    assert len(a.hidden_states) == len(b.hidden_states) == theirs.config.num_hidden_layers + 1
    for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(ha, hb, rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_parity_with_transformers_vit(impl):
    theirs = transformers_vit(impl)
    ours = convert_from_transformers_vit(theirs)
    assert type(ours) is ViTScratchForImageClassification and not ours.training
    assert ours.config._attn_implementation == impl
    assert ours.config.id2label == theirs.config.id2label
    assert_parity(theirs, ours, images())
    assert_parity(theirs, ours, images(size=64), interpolate=True)


def test_parity_non_default_shape():
    theirs = transformers_vit("sdpa", patch_size=8, hidden_size=48, num_attention_heads=2, intermediate_size=96,
                              qkv_bias=False, num_channels=1, hidden_act="gelu_new", layer_norm_eps=1e-6)
    ours = convert_from_transformers_vit(theirs)
    assert ours.config.qkv_bias is False and ours.vit.layers[0].attention.q_proj.bias is None
    assert (ours.config.patch_size, ours.config.num_channels, ours.config.hidden_act) == (8, 1, "gelu_new")
    assert_parity(theirs, ours, images(channels=1))
    assert_parity(theirs, ours, images(size=48, channels=1), interpolate=True)
