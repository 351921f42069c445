"""model.pretrained: start a run from a saved ViTScratch folder or a transformers ViT (converted), with a new head
when the classes differ and the position embeddings resampled when the image size does. All checkpoints are built
here (no download)."""

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from modeling_vit_scratch import ViTScratchConfig, ViTScratchForImageClassification, ViTScratchModel
from vit_scratch.errors import ConfigError
from vit_scratch.training.pretrained import load_pretrained
from vit_scratch.training.run import with_labels

from .helpers import CIFAR10_CLASSES, CONFIG, TINY, read_json, tiny_run_args, train_in_process


@pytest.fixture(scope="module")
def vit_224(tmp_path_factory):
    """A transformers ViT at 224 px, patch 16 (a 14x14 grid), 3 classes, with a 0.5/0.5 image processor."""
    folder = tmp_path_factory.mktemp("vit224")
    torch.manual_seed(0)
    config = ViTConfig(image_size=224, patch_size=16, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                       label2id={"a": 0, "b": 1, "c": 2}, **TINY)
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.vit.embeddings.position_embeddings.normal_()  # not the zeros of a fresh model: resampling shows
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3) \
        .save_pretrained(folder)
    return folder


def vit_scratch_folder(folder, **overrides):
    torch.manual_seed(1)
    model = ViTScratchForImageClassification(ViTScratchConfig(**TINY, patch_size=8, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    return model


def test_224px_transformers_vit_fine_tuned_at_32px(vit_224):
    given = {"image_size": 32, **TINY}
    pretrained = load_pretrained(str(vit_224), given)
    assert (pretrained.config.image_size, pretrained.config.patch_size) == (32, 16)  # the grid becomes 2x2
    assert pretrained.mean == pretrained.std == (0.5, 0.5, 0.5)  # its processor's normalisation, not the data's
    torch.manual_seed(0)
    model = pretrained.build(with_labels(pretrained.config, CIFAR10_CLASSES))

    source = ViTForImageClassification.from_pretrained(vit_224).state_dict()
    state = model.state_dict()
    grid = source["vit.embeddings.position_embeddings"][:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(state["vit.embeddings.position_embeddings"],
                               torch.cat([source["vit.embeddings.position_embeddings"][:, :1],
                                          expected.reshape(1, 4, 32)], dim=1))
    for key, value in state.items():
        if key.startswith("classifier."):  # 10 CIFAR classes, not the checkpoint's 3: a new head
            assert value.shape[0] == 10 and source[key].shape[0] == 3
        elif key != "vit.embeddings.position_embeddings":
            assert torch.equal(value, source[key]), key
    assert model.config.id2label[3] == "cat" and model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 10)


def test_saved_vit_scratch_with_the_same_classes_keeps_its_head(tmp_path):
    source = vit_scratch_folder(tmp_path / "run", id2label=dict(enumerate(CIFAR10_CLASSES)))
    pretrained = load_pretrained(str(tmp_path / "run"), {})
    assert pretrained.mean is None  # no image processor saved: the data's statistics will be used
    model = pretrained.build(with_labels(pretrained.config, CIFAR10_CLASSES)).eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(x).logits, source(x).logits, rtol=0, atol=0)

    other = pretrained.build(with_labels(pretrained.config, list(reversed(CIFAR10_CLASSES)))).eval()
    assert not torch.equal(other.classifier.weight, source.classifier.weight)  # same count, other order: new head
    torch.testing.assert_close(other.vit(x).pooler_output, source.vit(x).pooler_output, rtol=0, atol=0)


def test_backbone_only_checkpoint_gets_a_new_head(tmp_path):
    torch.manual_seed(0)
    backbone = ViTScratchModel(ViTScratchConfig(**TINY, patch_size=8)).eval()
    backbone.save_pretrained(tmp_path)
    pretrained = load_pretrained(str(tmp_path), {})
    assert not pretrained.has_head
    model = pretrained.build(with_labels(pretrained.config, ["x", "y"])).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.vit(x).pooler_output, backbone(x).pooler_output, rtol=0, atol=0)


@pytest.mark.parametrize("given, message", [
    ({"hidden_size": 64}, r"model.hidden_size=64 conflicts with model.pretrained=.*whose hidden_size is 32"),
    ({"patch_size": 4}, r"model.patch_size=4 conflicts with .*whose patch_size is 8"),
    ({"image_size": 36}, r"image_size=36 is invalid: must be a multiple of patch_size=8"),
    ({"hidden_dropout_prob": 1.5}, r"hidden_dropout_prob=1.5 is invalid"),
])
def test_a_config_that_contradicts_the_checkpoint_is_refused(tmp_path, given, message):
    vit_scratch_folder(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_pretrained(str(tmp_path), given)


def test_unloadable_sources_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"model.pretrained=.*nope.: no such folder"):
        load_pretrained(str(tmp_path / "nope"), {})
    with pytest.raises(ConfigError, match=r"model.pretrained='you/no-such-model': cannot load it"):  # a Hub id, offline
        load_pretrained("you/no-such-model", {})
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="is a 'bert' model: it takes a vit_scratch checkpoint"):
        load_pretrained(str(tmp_path / "bert"), {})


def test_train_py_fine_tunes_a_224px_vit_at_32px(vit_224, tmp_path, cifar10_path, capfd, caplog):
    """configs/cifar10.json's recipe with a model section that names the weights and the image size only (its own
    architecture keys would contradict the checkpoint's)."""
    recipe = read_json(Path(CONFIG))
    recipe["model"] = {"pretrained": str(vit_224), "image_size": 32}
    config = tmp_path / "finetune.json"
    config.write_text(json.dumps(recipe))
    out = tmp_path / "out"
    args = [str(config) if a == CONFIG else a for a in tiny_run_args(cifar10_path, out)]
    caplog.set_level(logging.INFO, logger="vit_scratch")  # as train.py's own logging set-up shows it
    assert train_in_process(args) == 0  # train.main in this process: no interpreter start
    stderr = capfd.readouterr().err + caplog.text  # the log's lines: on stderr, or in pytest's log capture
    assert "new classifier for the data's 10 classes (the checkpoint's: 3 classes (a, b, c))" in stderr
    assert "position embeddings resampled from a 14x14 to a 2x2 patch grid" in stderr
    config = read_json(out / "config.json")
    assert (config["image_size"], config["patch_size"], config["hidden_size"]) == (32, 16, 32)
    assert read_json(out / "preprocessor_config.json")["image_mean"] == [0.5, 0.5, 0.5]
    assert read_json(out / "experiment.json")["model"]["pretrained"] == str(vit_224)
    assert read_json(out / "all_results.json")["test_images"] == 64
    card = (out / "README.md").read_text()
    assert f"fine-tuned from `{vit_224}`" in card and "base_model" not in card  # a local path is no Hub metadata


def test_card_names_a_hub_base_model(tmp_path):
    from huggingface_hub import ModelCard

    from vit_scratch.reporting.card import write_model_card

    write_model_card(tmp_path / "README.md", model_name="m", results={"test_accuracy": 0.5}, config={},
                     dataset_name="uoft-cs/cifar10", class_names=["a", "b"], repo_id=None, curves_png="c.png",
                     base_model="google/vit-base-patch16-224")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "google/vit-base-patch16-224"
    assert "fine-tuned from `google/vit-base-patch16-224`" in card.text


def test_model_keys_that_match_the_checkpoint_are_not_checked_against_the_defaults():
    """num_attention_heads 2 with a 256-wide default would not divide; with model.pretrained the checkpoint decides."""
    from vit_scratch.config.schema import build_experiment

    experiment = build_experiment({"model": {"pretrained": "somewhere", "num_attention_heads": 3}})
    assert experiment.model is None and experiment.pretrained == "somewhere"
