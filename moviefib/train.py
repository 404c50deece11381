"""Training, checkpoints and prediction for the baselines: the public names of :mod:`moviefib.training`.

``load_config(name_or_path, overrides)`` gives a typed, checked :class:`TrainingConfig`;
``train(config)`` writes ``best.pt``, ``last.pt`` and ``metrics.json`` to ``train.out_dir``;
``predict(checkpoint, dataset, split)`` answers a split. Names resolve when first used, so importing
this module (and loading a config) does not import torch.
"""

from __future__ import annotations

import importlib

# Public name -> the module of moviefib.training that defines it.
_HOMES = {
    "config": ("ANSWER_PRESETS", "MAX_LR", "MISSING_POLICIES", "ConfigError", "DataSection", "FeaturesSection",
               "ModelSection", "OverrideError", "TrainSection", "TrainingConfig", "apply_override", "as_config",
               "check_device", "config_from_dict", "load_config"),
    "checkpoints": ("CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "build_checkpoint",
                    "check_state", "checkpoint_config", "is_neural", "load_checkpoint", "model_from_checkpoint",
                    "read_checkpoint", "save_checkpoint"),
    "inputs": ("QUESTION_COLUMNS", "RunData", "prepare_data", "prepare_splits", "read_split"),
    "loop": ("DivergedError", "SharedPermutation", "predict_indices", "seed_everything"),
    "ddp": ("per_rank_batch",),
    "progress": ("ProgressBar", "RunningFigures", "TrainProgress"),
    "run": ("RunState", "TrainResult", "prepare_out_dir", "train"),
    "prediction": ("ScoredRun", "ScoringError", "predict", "score_run", "train_and_score", "write_predictions"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"moviefib.training.{module}"), name)
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
