"""``moviefib train RECIPE [--set section.key=value ...]`` and ``moviefib predict CHECKPOINT DATASET``."""

from __future__ import annotations

import json
import os

from . import EXIT_INVALID, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a baseline from a recipe (baselines/<name>.toml)",
        description="Train a baseline. Every recipe key can be overridden with --set section.key=value "
                    "(TOML values: --set train.lr=1e-3 --set data.dataset='\"my_data\"' or a bare string).")
    p.add_argument("recipe", help="recipe TOML, e.g. baselines/text_only.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe key (repeatable)")
    p.add_argument("--dataset", help="dataset folder (same as --set data.dataset=...)")
    p.add_argument("--features-dir", help="folder of the feature stores (same as --set features.dir=...)")
    p.add_argument("--out", help="run folder (same as --set train.out_dir=...)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (same as --set train.device=...)")
    p.add_argument("--resume", metavar="LAST_PT", help="continue from a run's last.pt")
    p.add_argument("--score", action="store_true",
                   help="at the end, write the best model's val predictions and score them with the evaluator")
    p.set_defaults(func=_train)

    q = sub.add_parser("predict", help="answer a split's questions with a trained checkpoint",
                       description="Write a submission (TSV, or JSON when --out ends in .json).")
    q.add_argument("checkpoint", help="best.pt of a training run")
    q.add_argument("dataset", help="dataset folder")
    q.add_argument("--split", default="test")
    q.add_argument("--out", required=True, help="submission file to write")
    q.add_argument("--features-dir", help="folder of the feature stores (default: the paths used in training)")
    q.add_argument("--device", default="auto")
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--skip-missing", action="store_true",
                   help="leave out questions whose clip has no features instead of failing")
    q.set_defaults(func=_predict)


def _errors():
    """Library exceptions that mean bad input, as opposed to bugs."""
    from ..data import MissingFeaturesError
    from ..dataset import DatasetError
    from ..features.store import StoreError
    from ..train import ConfigError

    return ConfigError, DatasetError, StoreError, MissingFeaturesError


def _train(args) -> int:
    from ..train import load_config, train

    overrides = list(args.overrides)
    for flag, key in ((args.dataset, "data.dataset"), (args.features_dir, "features.dir"), (args.out, "train.out_dir"),
                      (args.device, "train.device"), (args.resume, "train.resume")):
        if flag is not None:
            overrides.append(f"{key}={json.dumps(flag)}")
    try:
        config = load_config(args.recipe, overrides)
        result = train(config)
    except _errors() as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    except TypeError as exc:  # a model setting the model does not take
        raise CLIError(f"{args.recipe}: bad [model] settings: {exc}", EXIT_USAGE) from None
    except (ImportError, RuntimeError) as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    print(f"{config['model']['name']}: best val accuracy {result.best_val_acc:.4f} at epoch {result.best_epoch} "
          f"({result.epochs_run} epochs); checkpoint {result.best_checkpoint}")
    if args.score:
        _score_val(config, result)
    return 0


def _score_val(config: dict, result) -> None:
    from ..evaluate import EvaluationError, evaluate, format_table
    from ..evaluate.report import metrics_json
    from ..train import predict, write_predictions

    d = config["data"]
    sub = result.out_dir / f"{d['val_split']}_predictions.tsv"
    try:
        write_predictions(predict(result.best_checkpoint, d["dataset"], d["val_split"],
                                  features_dir=config["features"]["dir"], device=config["train"]["device"],
                                  missing=d["missing"]), sub)
        ev = evaluate(d["dataset"], sub, split=d["val_split"], bootstrap=0, allow_missing=d["missing"] == "skip")
    except EvaluationError as exc:
        raise CLIError(f"scoring {sub}: {exc}", EXIT_INVALID) from None
    (result.out_dir / f"{d['val_split']}_evaluation.json").write_text(metrics_json(ev), encoding="utf-8")
    print(format_table(ev), end="")


def _predict(args) -> int:
    from ..train import predict, write_predictions

    try:
        answers = predict(args.checkpoint, args.dataset, args.split, features_dir=args.features_dir,
                          device=args.device, batch_size=args.batch_size,
                          missing="skip" if args.skip_missing else "error")
        write_predictions(answers, args.out)
    except _errors() as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    except (ImportError, RuntimeError) as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    print(f"wrote {len(answers)} answers to {args.out}")
    return 0
