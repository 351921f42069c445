"""vit-scratch's application: config, data, training, evaluation and reports around the `modeling_vit_scratch` model.

Light on purpose: importing this package (or `cli`, `config`) loads no torch or transformers, so the command line
answers `--help` and config errors at once. Heavy modules import their dependencies themselves.
"""
