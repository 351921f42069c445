"""ViTScratchConfig: every validation rule fails loudly, naming field, value and what is allowed; JSON round trip."""

import pytest
from huggingface_hub.errors import StrictDataclassError

from modeling_vit_scratch import ViTScratchConfig
from modeling_vit_scratch.configuration_vit_scratch import _POSITIVE_INTS, _PROBABILITIES

INT_FIELDS = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
              "num_attention_heads", "intermediate_size")


def config_error(**kwargs) -> tuple[BaseException, str]:
    """Build a config that must fail; return the underlying error (ValueError/TypeError) and the full message."""
    with pytest.raises(StrictDataclassError) as info:
        ViTScratchConfig(**kwargs)
    # huggingface_hub wraps the validator's error: StrictDataclassError derives from Exception, *not* ValueError.
    cause = info.value.__cause__
    assert cause is not None
    return cause, str(info.value)


def test_positive_int_fields_are_the_documented_ones():
    assert set(_POSITIVE_INTS) == set(INT_FIELDS)


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("name", INT_FIELDS)
def test_non_positive_sizes_fail(name, value):
    cause, message = config_error(**{name: value})
    assert isinstance(cause, ValueError)
    assert f"ViTScratchConfig.{name}={value!r}" in message
    assert "must be a positive integer" in message


@pytest.mark.parametrize("name", ["layer_norm_eps", "initializer_range"])
@pytest.mark.parametrize("value", [0.0, -1e-6])
def test_non_positive_floats_fail(name, value):
    cause, message = config_error(**{name: value})
    assert isinstance(cause, ValueError)
    assert f"{name}={value!r}" in message and "must be a positive number" in message


@pytest.mark.parametrize("value", [1.0, -0.1])
@pytest.mark.parametrize("name", _PROBABILITIES)
def test_probabilities_outside_unit_interval_fail(name, value):
    cause, message = config_error(**{name: value})
    assert isinstance(cause, ValueError)
    assert f"ViTScratchConfig.{name}={value!r}" in message
    assert "probability in [0, 1)" in message


@pytest.mark.parametrize("name", _PROBABILITIES)
def test_probability_bounds_inclusive_zero(name):
    assert getattr(ViTScratchConfig(**{name: 0}), name) == 0
    assert getattr(ViTScratchConfig(**{name: 0.99}), name) == 0.99


def test_hidden_size_must_divide_into_heads():
    cause, message = config_error(hidden_size=250, num_attention_heads=4)
    assert isinstance(cause, ValueError)
    assert "hidden_size=250" in message and "multiple of num_attention_heads=4" in message


def test_image_size_must_divide_into_patches():
    cause, message = config_error(image_size=30, patch_size=4)
    assert isinstance(cause, ValueError)
    assert "image_size=30" in message and "multiple of patch_size=4" in message


def test_unknown_pooling_fails():
    _, message = config_error(pooling="max")
    assert "pooling='max'" in message and "cls" in message and "mean" in message


def test_unknown_activation_fails():
    _, message = config_error(hidden_act="mish2")
    assert "hidden_act='mish2'" in message and "gelu" in message and "relu" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("hidden_size", "256", "int"), ("hidden_size", 32.0, "int"), ("num_hidden_layers", True, "int"),
     ("qkv_bias", 1, "bool"), ("pooling", None, "str")],
)
def test_wrong_types_fail(name, value, expected):
    cause, message = config_error(**{name: value})
    assert isinstance(cause, TypeError)
    assert f"'{name}'" in message and f"expected {expected}" in message and repr(value) in message


def test_defaults_are_valid_and_problem_type_unset():
    config = ViTScratchConfig()
    assert config.model_type == "vit_scratch"
    assert (config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers) == (32, 4, 256, 3)
    assert config.problem_type is None


def test_save_load_round_trip(tmp_path):
    fields = dict(image_size=48, patch_size=8, num_channels=1, hidden_size=40, num_hidden_layers=5,
                  num_attention_heads=5, intermediate_size=80, hidden_act="gelu_new", hidden_dropout_prob=0.25,
                  attention_probs_dropout_prob=0.125, drop_path_rate=0.2, layer_norm_eps=1e-5, qkv_bias=False,
                  pooling="mean", initializer_range=0.05)
    labels = {0: "cat", 1: "dog", 2: "ship"}
    config = ViTScratchConfig(**fields, id2label=labels, label2id={v: k for k, v in labels.items()})
    config.save_pretrained(tmp_path)
    loaded = ViTScratchConfig.from_pretrained(tmp_path)
    assert type(loaded) is ViTScratchConfig
    for name, value in fields.items():
        assert getattr(loaded, name) == value, name
    assert loaded.id2label == labels and loaded.label2id == {"cat": 0, "dog": 1, "ship": 2}
    assert loaded.num_labels == 3 and loaded.problem_type is None


def test_invalid_value_set_after_construction_fails_on_save(tmp_path):
    config = ViTScratchConfig()
    config.hidden_size = 250  # the class rule is not re-run on assignment, but it is before anything is written
    with pytest.raises(StrictDataclassError, match="hidden_size=250"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()
