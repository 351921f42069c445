"""Train a ViTScratch image classifier with the HF Trainer.

    accelerate launch train.py --config configs/cifar10.json [--SECTION.KEY VALUE ...] [-s SEED] [--resume]
    python train.py --config config.ini            # the older project's INI, mapped onto our keys

Every config key can be overridden on the command line, e.g. `--training.num_train_epochs 1`,
`--dataset.name ../shared/datasets/cifar10`, `--dataset.augmentation.mixup_alpha 0.8`.
"""

import argparse
import logging
import sys

logger = logging.getLogger("vit_scratch")


def light_import():
    """The standard-library modules that parse and check a config (vit_scratch's __init__ imports nothing heavy)."""
    from vit_scratch.cli import errors
    from vit_scratch.config import schema

    return schema, errors


def split_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Every `--SECTION.KEY VALUE` (or `--SECTION.KEY=VALUE`) is an override; the rest is `parser`'s."""
    own, overrides = [], []
    argv = list(argv)
    while argv:
        token = argv.pop(0)
        if not (token.startswith("--") and "." in token.split("=", 1)[0]):
            own.append(token)
        elif "=" in token:
            overrides.append(tuple(token[2:].split("=", 1)))
        elif argv:
            overrides.append((token[2:], argv.pop(0)))
        else:
            parser.error(f"{token} needs a value")
    return own, overrides


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """Our own flags go to argparse; every `--SECTION.KEY VALUE` (or `--SECTION.KEY=VALUE`) is an override."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="config file (.json, or the older project's .ini)")
    parser.add_argument("--config", dest="config_opt", metavar="FILE", help="config file (same as the positional)")
    parser.add_argument("-s", "--seed", type=int, help="seed of training (overrides training.seed)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    own, overrides = split_overrides(parser, argv)
    if {"-h", "--help"} & set(own):  # every config key with its type, default and meaning, read from the sources
        parser.epilog = light_import()[0].describe_keys()
    args = parser.parse_args(own)
    args.config = args.config_opt or args.config
    if args.config is None:
        parser.error("a config file is required (--config FILE)")
    return args, overrides


def report_error(err: Exception) -> None:
    """`error: MESSAGE` as one write: the processes of a multi-process launch share one stderr, and a line written
    in pieces (print writes the text, then the newline) can be cut into by another process's."""
    sys.stderr.write(f"error: {err}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    config_module, errors = light_import()
    try:
        config, ini_mapping = config_module.read_config_file(args.config)
        for line in ini_mapping:
            logger.info("INI %s", line)
        # Key names, forbidden keys, every value's type, choices and range first (no torch yet), then what needs
        # transformers: the model's cross-field rules, TrainingArguments' own, report_to backends, Hub access.
        experiment = config_module.build_experiment(config_module.apply_overrides(config, overrides), seed=args.seed)
        from vit_scratch.training.run import train_and_evaluate  # the heavy imports, after validation

        try:
            results = train_and_evaluate(experiment, resume=args.resume)
        except errors.TrainingStopped as err:  # NaN/inf loss (1), SIGTERM after its checkpoint (143)
            report_error(err)
            return err.exit_code
    except (errors.ConfigError, errors.DataError) as err:
        report_error(err)
        return 2
    summary = {k: results[k] for k in ("eval_accuracy", "test_accuracy", "train_samples_per_second") if k in results}
    logger.info("done: %s -> %s", summary, experiment.training.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
