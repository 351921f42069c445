"""What `ViTScratchTrainer` relies on in transformers' Trainer (and accelerate), held against the installed versions.

The Trainer is changed through overrides and callbacks. An override that transformers stops calling, or calls with
other arguments, would change nothing visible: the run would go on, silently different. So:
- every private Trainer method overridden here is listed below with the parameters it relies on;
- every other method either overrides a public Trainer method of the same parameters or is new to the Trainer;
- every callback hook is a TrainerCallback event, every accelerate setting written is one accelerate reads;
- a tiny run calls every override and every hook, and the cached accelerate check is consulted.
"""

import collections
import dataclasses
import functools
import inspect

import accelerate.optimizer
import pytest
from accelerate.utils import DataLoaderConfiguration
from transformers import Trainer, TrainerCallback

from tests.helpers import tiny_run_args, train_in_process
from vit_scratch.training import trainer as trainer_module
from vit_scratch.training.trainer import ViTScratchTrainer

# The private Trainer methods overridden, and the parameters transformers calls them with. One line of why is at
# each override; a test below fails when one is added without an entry here.
PRIVATE_OVERRIDES = {
    "_run_epoch": ["self", "model", "epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch",
                   "trial", "ignore_keys_for_eval", "start_time", "resume_from_checkpoint", "epochs_trained",
                   "steps_trained_in_current_epoch"],
}
# The public Trainer methods overridden (the seams transformers documents for subclasses).
PUBLIC_OVERRIDES = {"train", "evaluate", "compute_loss", "training_step", "floating_point_ops",
                    "get_decay_parameter_names", "get_train_dataloader", "get_eval_dataloader", "get_test_dataloader",
                    "save_model", "create_model_card"}
# Not called by a run without these settings: push_to_hub (create_model_card).
NOT_IN_A_TINY_RUN = {"create_model_card"}

CALLBACKS = [cls for cls in vars(trainer_module).values()
             if inspect.isclass(cls) and issubclass(cls, TrainerCallback) and cls.__module__ == trainer_module.__name__]


def own_methods(cls) -> dict:
    return {name: value for name, value in vars(cls).items()
            if inspect.isfunction(value) and not (name.startswith("__") and name.endswith("__"))}


def test_every_private_override_is_listed_with_its_contract():
    private = {name for name in own_methods(ViTScratchTrainer) if name.startswith("_") and hasattr(Trainer, name)}
    assert private == set(PRIVATE_OVERRIDES), \
        "a private Trainer method is overridden without a contract here (or a listed one no longer is)"


@pytest.mark.parametrize("name", sorted(PRIVATE_OVERRIDES))
def test_the_private_methods_overridden_exist_with_the_parameters_relied_on(name):
    assert hasattr(Trainer, name), f"transformers' Trainer no longer has {name}: the override is dead code"
    assert list(inspect.signature(getattr(Trainer, name)).parameters) == PRIVATE_OVERRIDES[name]


def named_parameters(function) -> list[str]:
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind not in variadic]


def passes_the_rest_on(function) -> bool:
    return any(p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
               for p in inspect.signature(function).parameters.values())


def test_public_overrides_keep_the_trainers_parameters_and_new_methods_shadow_nothing():
    ours = own_methods(ViTScratchTrainer)
    public = {name for name in ours if not name.startswith("_") and hasattr(Trainer, name)}
    # A Trainer method of the same name as one of ours would make ours an override by accident.
    assert public == PUBLIC_OVERRIDES
    for name in sorted(public):
        mine, base = named_parameters(ours[name]), named_parameters(getattr(Trainer, name))
        assert mine == base or (base[:len(mine)] == mine and passes_the_rest_on(ours[name])), name


def test_the_accelerate_settings_written_are_read_by_accelerate():
    # ViTScratchTrainer sets accelerator.dataloader_config.non_blocking: a renamed field would take the write silently.
    assert "non_blocking" in {field.name for field in dataclasses.fields(DataLoaderConfiguration)}
    assert inspect.isfunction(accelerate.optimizer.is_lomo_available) or hasattr(accelerate.optimizer.is_lomo_available,
                                                                                "cache_info")


def test_every_callback_hook_is_a_trainer_event():
    assert len(CALLBACKS) >= 5
    for cls in CALLBACKS:
        for name in own_methods(cls):
            if name.startswith("on_"):
                assert hasattr(TrainerCallback, name), f"{cls.__name__}.{name} is not a TrainerCallback event"


def test_a_tiny_run_calls_every_override_and_every_hook(cifar10_path, tmp_path, monkeypatch):
    calls = collections.Counter()

    def spy(cls, name):
        original = vars(cls)[name]

        @functools.wraps(original)
        def counted(*args, **kwargs):
            calls[f"{cls.__name__}.{name}"] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    overrides = [name for name in own_methods(ViTScratchTrainer) if hasattr(Trainer, name)]
    for name in overrides:
        spy(ViTScratchTrainer, name)
    hooks = [(cls, name) for cls in CALLBACKS for name in own_methods(cls) if name.startswith("on_")]
    for cls, name in hooks:
        spy(cls, name)
    lomo = accelerate.optimizer.is_lomo_available
    lomo_hits = lomo.cache_info().hits if hasattr(lomo, "cache_info") else 0

    args = tiny_run_args(cifar10_path, tmp_path / "run") + ["--training.ema_decay", "0.9", "--training.disable_tqdm",
                                                            "false"]
    assert train_in_process(args) == 0

    expected = [f"ViTScratchTrainer.{name}" for name in overrides if name not in NOT_IN_A_TINY_RUN]
    expected += [f"{cls.__name__}.{name}" for cls, name in hooks]
    assert [name for name in expected if calls[name] == 0] == []
    # The checkpoint and the final model both go through save_model; evaluation and training both through compute_loss.
    assert calls["ViTScratchTrainer.save_model"] >= 2
    assert calls["ViTScratchTrainer.compute_loss"] > calls["ViTScratchTrainer.training_step"]
    # accelerate still asks, on every step, the question whose answer is cached.
    lomo = accelerate.optimizer.is_lomo_available
    assert hasattr(lomo, "cache_info") and lomo.cache_info().hits > lomo_hits
