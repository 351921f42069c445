"""Hostile config values: every one is accepted or refused with one ConfigError naming its key, never another
exception. The values that raised before (found by bench/fuzz_config.py) each have a case; a property-based test
draws keys from keys.json and values from hostile strategies, with a fixed seed and a bounded number of examples."""

import contextlib
import io
import json
import math
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import fuzz_config  # noqa: E402

BASE = json.loads(fuzz_config.BASE.read_text())

# (key, value, what the one error line says after the key): each raised a raw exception before.
RAISED_BEFORE = [
    ("training.logging_steps", math.inf, "NaN and inf are not numbers a run can use"),  # OverflowError
    ("training.report_to", None, "must be a backend name, a list of them, 'all' or 'none'"),  # TypeError
    ("training.report_to", [None, "a", 1.5], "expected None | str | list[str]"),  # TypeError
    ("training.accelerator_config", "", "must be a JSON object or the path of a JSON file"),  # FileNotFoundError
    ("training.accelerator_config", "x" * 5000, "must be a JSON object or the path of a JSON file"),  # OSError 36
    ("training.accelerator_config", "../../../../../../../../tmp", "must be a JSON object or the path"),  # IsADir
    ("training.accelerator_config", "null", "must be a JSON object or the path of a JSON file"),
    ("training.deepspeed", "abc", "must be a JSON object or the path of a DeepSpeed config file"),  # PackageNotFound
    ("training.deepspeed", {"a": {"b": [1, {}]}}, "deepspeed is not installed"),  # PackageNotFoundError
    ("training.ddp_timeout", 2**63, "must be an integer within +-2,147,483,647"),  # OverflowError (C int)
    ("training.output_dir", "x" * 5000, "not a usable path (File name too long)"),  # OSError 36
    ("model.num_labels", None, None),  # TypeError: accepted now (null = from the data, as leaving it out)
    ("model.num_labels", 2**63, "must be a number of classes in 1..1,000,000"),  # exhausted the memory
    # accepted before, but not numbers a run can use
    ("model.layer_norm_eps", math.nan, "NaN and inf are not numbers a run can use"),
    ("model.initializer_range", math.inf, "NaN and inf are not numbers a run can use"),
    ("dataset.augmentation.mixup_alpha", math.inf, "NaN and inf are not numbers a run can use"),
    ("dataset.augmentation.cutmix_alpha", math.inf, "NaN and inf are not numbers a run can use"),
    ("training.seed", -1, "must be an integer in 0..4,294,967,295"),  # numpy's seed: ValueError at set_seed
    ("dataset.augmentation.randaugment_num_ops", 2**40, "must be an integer within +-2,147,483,647"),
    ("dataset.name", "a\x00b", "a NUL byte cannot be part of a name or path"),
]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A scratch working folder: output_dir values may be relative."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("key, value, message", RAISED_BEFORE, ids=[f"{k}={v!r:.20}" for k, v, _ in RAISED_BEFORE])
def test_a_value_that_raised_is_refused_in_one_line_naming_the_key(scratch, key, value, message):
    from vit_scratch.errors import ConfigError

    config = fuzz_config.with_value(BASE, key, value)
    if message is None:
        fuzz_config.config_stage(config)  # accepted
        return
    with pytest.raises(ConfigError) as refused:
        fuzz_config.config_stage(config)
    text = str(refused.value)
    assert text.startswith(f"{key}=") and message in text and "\n" not in text, text


def test_train_py_prints_one_error_line_and_exits_2(scratch):
    """The same through the command line (JSON values): `--training.logging_steps Infinity`."""
    import train

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = train.main(["--config", str(fuzz_config.BASE), "--training.logging_steps", "Infinity"])
    lines = err.getvalue().strip().splitlines()
    assert status == 2 and lines[-1] == "error: training.logging_steps=inf is invalid: NaN and inf are not numbers " \
                                        "a run can use (anywhere in the value)", err.getvalue()
    assert "Traceback" not in err.getvalue()


KEYS = fuzz_config.keys()
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-3, 3)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(fuzz_config.HOSTILE)
           | st.text(st.characters(codec="utf-8"), max_size=12)  # any character but a lone surrogate
           | st.text(st.sampled_from("\x00\x01\n\t\x7f/.é"), max_size=6)
           | st.sampled_from(["none", "all", "epoch", "steps", "no", "auto", "cpu", "cosine", "adamw_torch"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 2000)), derandomize=True, deadline=None,
          database=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_of_any_key_is_accepted_or_refused_in_one_line(scratch, key, value):
    """Hypothesis, with a fixed seed (derandomize) and a bounded number of examples: the config stage (the sections'
    checks and the output folder's, in a scratch folder) accepts the value or raises ConfigError naming the key's
    section; nothing else. bench/fuzz_config.py runs longer."""
    kind, detail = fuzz_config.outcome(fuzz_config.with_value(BASE, key, value), key)
    assert kind != "raised", f"{key}={value!r}: {detail}"
