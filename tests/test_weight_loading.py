"""Incomplete or torn weights never load as if they were complete: transformers' own contract, and our loader's
stricter one."""

import json
import shutil

import pytest

from .faults_harness import weights


def test_from_pretrained_reports_and_our_loader_refuses_incomplete_weights(saved_model, tmp_path, caplog):
    """transformers' contract: `from_pretrained` loads, reports missing keys in `missing_keys` and logs them. The
    project's own loading path (`load_complete_model`: resume, validation, prediction) refuses, naming the keys."""
    from safetensors.torch import save_file

    from modeling_vit_scratch import ViTScratchForImageClassification, ViTScratchModel
    from vit_scratch.config.schema import ConfigError
    from vit_scratch.training.checkpoints import load_complete_model

    no_weights = tmp_path / "no_weights"
    shutil.copytree(saved_model, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(OSError, match="no file named model.safetensors"):
        ViTScratchForImageClassification.from_pretrained(no_weights)
    with pytest.raises(ConfigError, match="no_weights: cannot load the model: OSError: .*model.safetensors"):
        load_complete_model(no_weights)

    wider = tmp_path / "config_says_64"  # config.json says 64 wide, the weights are 32 wide
    shutil.copytree(saved_model, wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers' own check, strict by default
        ViTScratchForImageClassification.from_pretrained(wider)
    with pytest.raises(ConfigError, match="of another shape"):
        load_complete_model(wider, ignore_mismatched_sizes=True)

    for dropped in ("classifier.weight", "vit.layers.0.mlp.fc1.bias"):
        partial = tmp_path / f"without_{dropped}"
        shutil.copytree(saved_model, partial)
        tensors = weights(partial)
        del tensors[dropped]
        save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
        caplog.clear()
        model, info = ViTScratchForImageClassification.from_pretrained(partial, output_loading_info=True)
        assert info["missing_keys"] == [dropped] or set(info["missing_keys"]) == {dropped}
        assert dropped in caplog.text  # logged, naming the key
        with pytest.raises(ConfigError, match=rf"the weights do not cover ViTScratchForImageClassification: "
                                              rf"1 missing \({dropped}\)"):
            load_complete_model(partial)

    # transformers' own idiom: a fresh model from a config and an empty state dict
    fresh, info = ViTScratchForImageClassification.from_pretrained(
        None, config=ViTScratchForImageClassification.config_class.from_pretrained(saved_model), state_dict={},
        output_loading_info=True)
    assert len(info["missing_keys"]) == len(fresh.state_dict())

    truncated = tmp_path / "truncated"
    shutil.copytree(saved_model, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="truncated: cannot load the model: .*(incomplete metadata|not fully cov)"):
        load_complete_model(truncated)

    # A backbone into a classifier: a new head, reported as missing (the fine-tuning case).
    backbone = tmp_path / "backbone"
    ViTScratchModel.from_pretrained(saved_model).save_pretrained(backbone)
    model, info = ViTScratchForImageClassification.from_pretrained(backbone, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert load_complete_model(saved_model).num_labels == 3


@pytest.mark.parametrize("cut", ["header", "half", "last byte"])
def test_a_torn_model_safetensors_never_loads(saved_model, tmp_path, cut):
    """What a write cut short leaves: from_pretrained (our class and the Auto class) and pipeline fail, naming the
    file's problem, rather than load part of the weights."""
    from safetensors import SafetensorError
    from transformers import AutoModelForImageClassification, ViTImageProcessorPil, pipeline

    from modeling_vit_scratch import ViTScratchForImageClassification

    torn = tmp_path / "torn"
    shutil.copytree(saved_model, torn)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(torn)  # all that pipeline needs
    data = (torn / "model.safetensors").read_bytes()
    keep = {"header": 20, "half": len(data) // 2, "last byte": len(data) - 1}[cut]
    (torn / "model.safetensors").write_bytes(data[:keep])
    for load in (ViTScratchForImageClassification.from_pretrained, AutoModelForImageClassification.from_pretrained,
                 lambda folder: pipeline("image-classification", model=str(folder))):
        with pytest.raises(SafetensorError, match="Error while deserializing header: (invalid header length|incomplete "
                                                  "metadata, file not fully covered)"):
            load(torn)
