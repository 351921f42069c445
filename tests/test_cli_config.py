"""Config files, overrides and the older project's INI -> validated experiment; bad input fails with the key named."""

import json
import shutil

import pytest
import torch

from vit_scratch.config.schema import (
    ConfigError,
    apply_overrides,
    build_experiment,
    read_config_file,
)

from .helpers import REPO

SEED_INI = REPO.parent / "shared" / "seed" / "config.ini"

# The older project's README documents its config with inline comments; it must read as is.
README_INI = """\
[dataset]
dir = ./datasets			; training data save directory
name = CIFAR10				; dataset name, only CIFAR10 is acceptable
in_channels = 3				; number of channels
image_size = 32				; image size; 32x32
num_classes = 10			; 10 class classification

[dataloader]
batch_size = 32
shuffle = true

[model]
patch_size = 4				; use 4 x 4 px for patch
embed_dim = 256				; same meaning of dim=256 of `vit-pytorch`
num_blocks = 3				; same meaning of depth=3 of `vit-pytorch`
heads = 4					; number of multihead attention
hidden_dim = 256			; same meaning of mlp_dim=256 of `vit-pytorch`
dropout = 0.1				; dropout ratio

[learning]
epochs = 20
learning_rate = 0.001
"""

EXPECTED_FROM_INI = {
    "model": {"num_channels": 3, "image_size": 32, "num_labels": 10, "patch_size": 4, "hidden_size": 256,
              "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 256, "hidden_dropout_prob": 0.1},
    "training": {"per_device_train_batch_size": 32, "per_device_eval_batch_size": 32, "num_train_epochs": 20,
                 "learning_rate": 0.001},
}


def test_shipped_json_configs_validate(tmp_path):
    for path in sorted((REPO / "configs").glob("*.json")):
        config, mapping = read_config_file(path)
        assert mapping == []
        overrides = [("training.output_dir", str(tmp_path))]
        if not torch.cuda.is_available():  # the GPU recipe asks for bf16, which TrainingArguments refuses on a CPU
            overrides.append(("training.bf16", "false"))
        experiment = build_experiment(apply_overrides(config, overrides))
        assert experiment.training.output_dir == str(tmp_path)


def test_cifar10_json_reproduces_the_older_experiment():
    config, _ = read_config_file(REPO / "configs" / "cifar10.json")
    experiment = build_experiment(config)
    assert {k: getattr(experiment.model, k) for k in EXPECTED_FROM_INI["model"] if k != "num_labels"} == {
        k: v for k, v in EXPECTED_FROM_INI["model"].items() if k != "num_labels"}
    assert experiment.training.num_train_epochs == 20
    assert experiment.training.learning_rate == 0.001
    assert experiment.training.per_device_train_batch_size == 32
    assert experiment.dataset.name == "uoft-cs/cifar10"  # the product defaults to the Hub


@pytest.mark.parametrize("text", [SEED_INI.read_text(), README_INI], ids=["seed-config", "readme-commented"])
def test_ini_maps_onto_our_keys(tmp_path, text, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.ini"
    path.write_text(text)
    config, mapping = read_config_file(path)
    assert config["model"] == EXPECTED_FROM_INI["model"]
    assert config["training"] == EXPECTED_FROM_INI["training"]
    assert config["dataset"] == {"name": "uoft-cs/cifar10", "cache_dir": "datasets"}
    assert any("embed_dim" in line and "model.hidden_size" in line for line in mapping)
    experiment = build_experiment(config, seed=7)
    assert experiment.training.seed == 7
    assert experiment.model.hidden_size == 256


def test_ini_dir_holding_the_cifar_archive_becomes_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets" / "cifar-10-batches-py").mkdir(parents=True)
    shutil.copy(SEED_INI, tmp_path / "config.ini")
    config, _ = read_config_file(tmp_path / "config.ini")
    assert config["dataset"] == {"name": "datasets"}


@pytest.mark.parametrize(
    "ini, message",
    [
        ("[model]\nembed_dimm = 256\n", "unknown INI key [model] embed_dimm"),
        ("[dataset]\nname = MNIST\n", "name='MNIST' is not supported"),
        ("[dataloader]\nshuffle = false\n", "shuffle must be true"),
        ("[model\nembed_dim = 1\n", "malformed INI"),
    ],
)
def test_bad_ini(tmp_path, ini, message):
    path = tmp_path / "bad.ini"
    path.write_text(ini)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        read_config_file(path)


def test_overrides_parse_json_values_and_nest():
    config = apply_overrides({"training": {"learning_rate": 1.0}}, [
        ("training.learning_rate", "0.5"),
        ("training.logging_first_step", "true"),
        ("dataset.name", "../shared/datasets/cifar10"),
        ("dataset.augmentation.mixup_alpha", "0.8"),
        ("training.label_names", '["labels"]'),
    ])
    assert config["training"] == {"learning_rate": 0.5, "logging_first_step": True, "label_names": ["labels"]}
    assert config["dataset"] == {"name": "../shared/datasets/cifar10", "augmentation": {"mixup_alpha": 0.8}}
    experiment = build_experiment(config)
    assert experiment.dataset.augmentation.mixup_alpha == 0.8


@pytest.mark.parametrize(
    "config, message",
    [
        ({"training": {"learnig_rate": 0.1}}, "unknown key training.learnig_rate; did you mean 'learning_rate'"),
        ({"model": {"hiden_size": 64}}, "unknown key model.hiden_size; did you mean 'hidden_size'"),
        ({"dataset": {"augmentation": {"mixup": 0.2}}}, "unknown key dataset.augmentation.mixup; did you mean"),
        ({"trainng": {}}, "unknown section 'trainng'; did you mean 'training'"),
        ({"training": {"learning_rate": "fast"}}, "training.learning_rate='fast' is invalid: expected float"),
        ({"training": {"learning_rate": -0.1}}, "training.learning_rate=-0.1 is invalid: must be > 0"),
        ({"training": {"num_train_epochs": 0}}, "training.num_train_epochs=0 is invalid"),
        ({"training": {"lr_scheduler_type": "cosin"}}, "lr_scheduler_type=.cosin. is invalid.*mean .cosine."),
        ({"training": {"eval_strategy": "sometimes"}}, "eval_strategy=.sometimes. is invalid: expected one of"),
        ({"training": {"torch_compile": False, "torch_compile_mode": "reduce-overhead"}},
         "training.torch_compile=false with training.torch_compile_mode='reduce-overhead': transformers compiles"),
        ({"training": {"train_sampling_strategy": "group_by_length"}},
         "training.train_sampling_strategy=.group_by_length. is invalid: must be .random. or .sequential."),
        ({"training": {"lr_scheduler_type": ["cosine"]}}, r"lr_scheduler_type=\['cosine'\] is invalid: expected"),
        ({"training": {"bf16": "yes"}}, "training.bf16='yes' is invalid: expected bool"),
        ({"training": {"hub_token": "hf_secret"}}, "training.hub_token is not allowed"),
        ({"model": {"hidden_size": 250}}, "hidden_size=250 is invalid: must be a multiple of num_attention_heads=4"),
        ({"model": {"patch_size": 5}}, "image_size=32 is invalid: must be a multiple of patch_size=5"),
        ({"model": {"hidden_dropout_prob": 1.5}}, "hidden_dropout_prob=1.5 is invalid"),
        ({"model": {"num_hidden_layers": "3"}}, "model.num_hidden_layers='3' is invalid: expected int"),
        ({"dataset": {"validation_size": -5}}, "dataset.validation_size=-5 is invalid"),
        ({"dataset": {"augmentation": {"mix_prob": 2}}}, "dataset.augmentation.mix_prob=2 is invalid"),
        ({"dataset": {"augmentation": {"horizontal_flip": "yes"}}}, "horizontal_flip='yes' is invalid"),
        ({"model": []}, "model must be a JSON object"),
        ({"training": {"do_train": False}}, "training.do_train is not allowed: train.py always trains"),
        ({"training": {"do_eval": True}}, "training.do_eval is not allowed: .*validate.py"),
        ({"training": {"do_predict": True}}, "training.do_predict is not allowed: .*predict.py"),
        ({"training": {"resume_from_checkpoint": "/nonexistent"}}, "resume_from_checkpoint is not allowed: .*--resume"),
        ({"training": {"report_to": ["tensorbord"]}}, "report_to='tensorbord' is invalid; did you mean 'tensorboard'"),
        ({"dataset": {"max_test_samples": 0}}, "dataset.max_test_samples=0 is invalid"),
        ({"dataset": {"storage": "disk"}}, "dataset.storage='disk' is invalid: expected one of auto, device, host, "
                                           "stream"),
        ({"dataset": {"storage": "device"}, "training": {"dataloader_num_workers": 4}},
         "training.dataloader_num_workers=4 is invalid with dataset.storage='device': workers decode images for "
         "storage 'stream'"),
        ({"dataset": {"storage": "host"}, "training": {"dataloader_num_workers": 2}},
         "dataloader_num_workers=2 is invalid with dataset.storage='host'"),
        ({"training": {"dataloader_persistent_workers": True}},
         "dataloader_persistent_workers is not allowed: the decode workers .* start afresh each epoch"),
    ],
)
def test_bad_values_fail_naming_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(config)


def test_no_validation_split_with_an_eval_strategy_fails_before_any_data(tmp_path, capsys):
    """Refused by build_experiment, which reads no data: the dataset here does not exist, and the error is still
    about the config (train.py exits 2 with it before it opens the data or creates the output folder)."""
    import train

    missing = str(tmp_path / "no-such-dataset")
    config = {"dataset": {"name": missing, "validation_size": 0}, "training": {"output_dir": str(tmp_path / "out")}}
    with pytest.raises(ConfigError, match=r"^dataset.validation_size=0 leaves nothing to evaluate on: set "
                                          r"training.eval_strategy='no' and training.load_best_model_at_end=false"):
        build_experiment(config)
    config["training"].update(eval_strategy="no", load_best_model_at_end=False)
    assert build_experiment(config).dataset.validation_size == 0

    assert train.main(["--config", str(REPO / "configs" / "cifar10.json"), "--dataset.name", missing,
                       "--dataset.validation_size", "0", "--training.output_dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: dataset.validation_size=0 leaves nothing to evaluate on")
    assert not (tmp_path / "out").exists()


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"training": {\n  "learning_rate": 0.1,\n}}')
    with pytest.raises(ConfigError, match="malformed JSON at line 3"):
        read_config_file(path)


def test_missing_and_unsupported_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "nope.json")
    (tmp_path / "c.yaml").write_text("a: 1")
    with pytest.raises(ConfigError, match="expected a .json file"):
        read_config_file(tmp_path / "c.yaml")


def test_training_defaults_apply_under_the_file(tmp_path):
    experiment = build_experiment({"training": {"output_dir": str(tmp_path), "logging_steps": 7}})
    assert experiment.training.logging_steps == 7  # the file wins
    assert experiment.training.load_best_model_at_end  # project default
    assert experiment.training.metric_for_best_model == "accuracy"
    assert experiment.raw["training"] == {"output_dir": str(tmp_path), "logging_steps": 7}
    json.dumps(experiment.raw)  # what is written to experiment.json


def test_missing_report_to_backend_names_the_extra(monkeypatch):
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: [])
    for backend in ("tensorboard", "trackio"):
        with pytest.raises(ConfigError, match=rf'report_to=.{backend}.: {backend} is not installed; `pip install -e '
                                              rf'".\[{backend}\]"`'):
            build_experiment({"training": {"report_to": [backend]}})
    with pytest.raises(ConfigError, match="wandb is not installed; `pip install wandb`"):
        build_experiment({"training": {"report_to": "wandb"}})
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard"])
    assert build_experiment({"training": {"report_to": ["tensorboard"]}}).training.report_to == ["tensorboard"]


@pytest.mark.parametrize("token", [None, "hf_not_a_real_token"])
def test_push_to_hub_that_cannot_reach_the_hub_fails_before_training(monkeypatch, token):
    """Offline (or without a token), push_to_hub used to end in a traceback after the whole run."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", "/nonexistent/token")
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    reason = "offline mode is enabled" if token else "no token found"
    with pytest.raises(ConfigError, match=f"training.push_to_hub=true, but the Hub cannot be used: .*{reason}"):
        build_experiment({"training": {"push_to_hub": True, "hub_model_id": "user/x"}})
    assert not build_experiment({"training": {"hub_model_id": "user/x"}}).training.push_to_hub  # no push: no check


@pytest.mark.parametrize("storage", ["stream", "auto"])
def test_stream_takes_dataloader_workers(storage):
    """Workers decode for storage 'stream' (and 'auto', which may pick it); the Trainer's own keys carry them."""
    experiment = build_experiment({"dataset": {"storage": storage},
                                   "training": {"dataloader_num_workers": 3, "dataloader_prefetch_factor": 4}})
    assert experiment.dataset.storage == storage
    assert experiment.training.dataloader_num_workers == 3 and experiment.training.dataloader_prefetch_factor == 4
