"""Training: the Trainer subclass, the run, checkpoints, pretrained starts, guarded writes."""
