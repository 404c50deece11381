"""Training, checkpoints and prediction for the baselines, one concern a module.

* :mod:`.rules`: what a setting takes (the rule on each field of a settings record);
* :mod:`.config`: the typed config (:class:`~.config.TrainingConfig`), loaded and checked once;
* :mod:`.inputs`: the data step (splits, vocabularies, feature stores, datasets);
* :mod:`.loop`: the optimiser set-up, one epoch, validation, prediction of indices;
* :mod:`.ddp`: torchrun's process group, the DDP wrapper, the split of the batch;
* :mod:`.checkpoints`: ``best.pt``/``last.pt`` written and read back checked;
* :mod:`.run`: :func:`~.run.train`, the run as named steps;
* :mod:`.prediction`: answers from a checkpoint, and ``train --score``;
* :mod:`.progress`: the callbacks a run reports to (the library draws no bar unless asked).

:mod:`moviefib.train` re-exports the public names. Nothing is imported here: :mod:`.config` and
:mod:`.rules` stay torch-free (recipes are checked before torch loads); the others import torch.
"""
