"""What a run writes: the same seed gives the same run, no token in any file, weights in safetensors only."""


import torch

from .faults_harness import BEST_AT_END, assert_same_run, finished, train_run, write_config

FAKE_TOKEN = "hf_faults_secret_token_4242"


def test_determinism_and_no_token_or_pickled_weights_in_any_output(best_run, tmp_path, cifar10_path):
    """The same seed twice gives identical weights and metrics (best_run vs this run, started with HF_TOKEN set);
    no file under output_dir, checkpoints included, holds the token; weights are safetensors only."""
    config = write_config(tmp_path, cifar10_path, BEST_AT_END)
    out = tmp_path / "out"
    finished(train_run(config, out, env={"HF_TOKEN": FAKE_TOKEN}))
    assert_same_run(out, best_run)

    files = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in files if FAKE_TOKEN.encode() in p.read_bytes()] == []
    assert {p.name for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".msgpack")} == \
           {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert not any(p.name in ("pytorch_model.bin", "model.bin") or "pytorch_model" in p.name for p in files)
    weight_files = {p.relative_to(out).as_posix() for p in files if p.suffix == ".safetensors"}
    assert weight_files == {"model.safetensors", "checkpoint-5/model.safetensors", "checkpoint-10/model.safetensors"}
    # training_args.bin is a pickle of TrainingArguments: no token in it (hub_token is refused in configs)
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert type(args).__name__ == "ViTScratchTrainingArguments" and args.hub_token is None
    assert FAKE_TOKEN not in repr(vars(args))
    # the Trainer loads the weights back from safetensors, and optimizer/scheduler/RNG states with
    # torch.load(weights_only=True): check they load that way (no arbitrary objects inside)
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():  # what transformers allows when it loads them back (numpy's RNG state for rng_state.pth)
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            torch.load(out / "checkpoint-5" / name, weights_only=True)
