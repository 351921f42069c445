"""A saved run's `experiment.json` read back (validate.py, export.py): the run's sections, its `dataset` section as
validated arguments, and the precision it evaluated in. Standard library only."""

import json
import logging
from pathlib import Path

from vit_scratch.backends import training_precision
from vit_scratch.config import schema
from vit_scratch.errors import ConfigError

logger = logging.getLogger("vit_scratch")


def saved_experiment(model: str) -> dict:
    """MODEL/experiment.json (the sections train.py ran with), or {} when MODEL holds none (a Hub id, another model)."""
    saved = Path(model).expanduser() / schema.EXPERIMENT_FILE
    if not saved.is_file():
        return {}
    try:
        experiment = json.loads(saved.read_text())
        if not isinstance(experiment.get("dataset", {}), dict) or not isinstance(experiment.get("training", {}), dict):
            raise TypeError("its sections must be objects")
    except (ValueError, TypeError, AttributeError) as err:
        raise ConfigError(f"{saved}: not a train.py experiment file ({err})") from None
    logger.info("dataset keys and precision from %s (then the command line's)", saved)
    return experiment


def dataset_arguments(experiment: dict, overrides: list[tuple[str, str]]) -> schema.DataArguments:
    """The run's `dataset` section with `--dataset.KEY VALUE` overrides on top, validated as train.py validates it
    (same `error:` messages)."""
    config = {"dataset": experiment["dataset"]} if "dataset" in experiment else {}
    config = schema.check_keys(schema.apply_overrides(config, overrides))
    return schema.DataArguments(**config["dataset"])


def run_precision(experiment: dict) -> str:
    """The precision the run evaluated in (backends.training_precision of its training section)."""
    training = experiment.get("training", {})
    return training_precision(training.get("bf16"), training.get("fp16"))
