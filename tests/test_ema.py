"""`training.ema_decay`: the average itself (timm's ModelEmaV3 recursion), and its keys. What a run does with it
(checkpoints, exact resume, the saved model, evaluation) is test_ema_resume.py's; the
2-process launch in test_multinode.py; the step's freedom from host syncs in test_step_sync.py."""

import pytest
import torch

from vit_scratch.config.schema import build_experiment
from vit_scratch.errors import ConfigError
from vit_scratch.training.ema import WeightEMA


def timm_decay(step: int, decay: float, warmup: bool) -> float:
    """timm ModelEmaV3.get_decay with update_after_step=0, warmup_gamma=1, warmup_power=2/3, min_decay=0."""
    step = max(0, step - 1)
    if step <= 0:
        return 0.0
    return max(min(1 - (1 + step) ** (-2 / 3), decay), 0.0) if warmup else decay


@pytest.mark.parametrize("warmup", [False, True])
def test_decay_schedule_is_timms(warmup):
    ema = WeightEMA(torch.nn.Linear(2, 2), decay=0.999, warmup=warmup)
    assert [ema.decay_at(s) for s in range(1, 2000, 37)] == [timm_decay(s, 0.999, warmup) for s in range(1, 2000, 37)]
    if warmup:  # a ramp: 0 at the first update, 0.37 at the second, the cap only after ~31,600 steps
        assert ema.decay_at(2) == pytest.approx(0.370, abs=1e-3) and ema.decay_at(100) < 0.98
        assert ema.decay_at(40_000) == 0.999


def test_update_is_the_moving_average_and_swapping_restores_the_weights_bit_for_bit():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = WeightEMA(model, decay=0.9, warmup=True)
    expected = {name: t.detach().clone() for name, t in model.state_dict().items()}
    for step in range(1, 8):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).square().mean().backward()
        optimizer.step()
        ema.update(step)
        d = timm_decay(step, 0.9, True)
        expected = {name: d * e + (1 - d) * model.state_dict()[name] for name, e in expected.items()}
    weights = {name: t.clone() for name, t in model.state_dict().items()}
    assert any(not torch.allclose(expected[n], weights[n]) for n in weights)  # the average is not the weights
    with ema.swapped_in() as own:
        for name, t in model.state_dict().items():
            torch.testing.assert_close(t, expected[name], rtol=0, atol=1e-6)
            assert torch.equal(own[name], weights[name])
    for name, t in model.state_dict().items():
        assert torch.equal(t, weights[name]), name
    ema.copy_to_model()
    for name, t in model.state_dict().items():
        torch.testing.assert_close(t, expected[name], rtol=0, atol=1e-6)


def test_the_average_lives_beside_the_weights_on_their_device_and_dtype():
    model = torch.nn.Linear(3, 3).to(torch.float64)
    ema = WeightEMA(model, decay=0.5)
    assert [t.dtype for t in ema.shadow] == [torch.float64] * 2
    assert all(s.data_ptr() != t.data_ptr() for s, t in zip(ema.shadow, model.parameters(), strict=True))
    assert ema.names == ["weight", "bias"]


@pytest.mark.parametrize("training, message", [
    ({"ema_decay": 1.5}, "training.ema_decay=1.5 is invalid: must be in (0, 1), e.g. 0.999, or null (off)"),
    ({"ema_decay": 0}, "training.ema_decay=0 is invalid: must be in (0, 1)"),
    ({"ema_decay": "0.9"}, "training.ema_decay='0.9' is invalid: expected float | None"),
    ({"ema_warmup": True}, "training: ema_warmup needs ema_decay (the decay it ramps up to)"),
])
def test_bad_ema_keys_are_refused_naming_the_key(training, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        build_experiment({"training": {"output_dir": str(tmp_path), **training}})
    assert str(error.value).startswith(message), str(error.value)


def test_ema_keys_build_the_training_arguments(tmp_path):
    args = build_experiment({"training": {"output_dir": str(tmp_path), "ema_decay": 0.999,
                                          "ema_warmup": True}}).training
    assert type(args).__name__ == "ViTScratchTrainingArguments" and (args.ema_decay, args.ema_warmup) == (0.999, True)
    assert build_experiment({"training": {"output_dir": str(tmp_path)}}).training.ema_decay is None


@pytest.mark.parametrize("ema", [None, 0.999])
def test_the_card_says_when_the_weights_are_the_average(ema, tmp_path):
    from vit_scratch.reporting.card import write_model_card

    training = {"load_best_model_at_end": True, **({"ema_decay": ema, "ema_warmup": True} if ema else {})}
    write_model_card(tmp_path / "README.md", model_name="m", results={"test_accuracy": 0.5}, config={
        "training": training}, dataset_name="uoft-cs/cifar10", class_names=["a", "b"], repo_id=None,
        curves_png="training_curves.png")
    text = (tmp_path / "README.md").read_text()
    said = "its weights are the exponential moving average of the training weights (`ema_decay=0.999`, warmed up)"
    assert (said in text) == (ema is not None)
