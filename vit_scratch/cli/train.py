"""Train a ViTScratch image classifier with the HF Trainer.

    accelerate launch train.py --config configs/cifar10.json [--SECTION.KEY VALUE ...] [-s SEED] [--resume]
    python train.py --config config.ini            # the older project's INI, mapped onto our keys

Every config key can be overridden on the command line, e.g. `--training.num_train_epochs 1`,
`--dataset.name ../shared/datasets/cifar10`, `--dataset.augmentation.mixup_alpha 0.8`.
"""

import argparse
import logging
import sys

from vit_scratch import errors
from vit_scratch.cli.args import report_error, setup_logging, split_overrides
from vit_scratch.config import schema

logger = logging.getLogger("vit_scratch")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """Our own flags go to argparse; every `--SECTION.KEY VALUE` (or `--SECTION.KEY=VALUE`) is an override."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="config file (.json, or the older project's .ini)")
    parser.add_argument("--config", dest="config_opt", metavar="FILE", help="config file (same as the positional)")
    parser.add_argument("-s", "--seed", type=int, help="seed of training (overrides training.seed)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    own, overrides = split_overrides(parser, argv)
    if {"-h", "--help"} & set(own):  # every config key with its type, default and meaning (keys.json)
        parser.epilog = schema.describe_keys()
    args = parser.parse_args(own)
    args.config = args.config_opt or args.config
    if args.config is None:
        parser.error("a config file is required (--config FILE)")
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config, ini_mapping = schema.read_config_file(args.config)
        for line in ini_mapping:
            logger.info("INI %s", line)
        # Key names, forbidden keys, every value's type, choices and range first (no torch yet), then what needs
        # transformers: the model's cross-field rules, TrainingArguments' own, report_to backends, Hub access.
        experiment = schema.build_experiment(schema.apply_overrides(config, overrides), seed=args.seed)
        from vit_scratch.distributed import end_process_group  # the heavy imports, after validation
        from vit_scratch.training.run import train_and_evaluate

        try:
            results = train_and_evaluate(experiment, resume=args.resume)
        except errors.TrainingStopped as err:  # NaN/inf loss (1), SIGTERM after its checkpoint (143)
            report_error(err)
            return err.exit_code
        finally:
            end_process_group()
    except (errors.ConfigError, errors.DataError) as err:
        report_error(err)
        return 2
    summary = {k: results[k] for k in ("eval_accuracy", "test_accuracy", "train_samples_per_second") if k in results}
    logger.info("done: %s -> %s", summary, experiment.training.output_dir)
    return 0

