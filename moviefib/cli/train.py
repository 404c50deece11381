"""``moviefib train RECIPE [--set section.key=value ...]`` and ``moviefib predict CHECKPOINT DATASET``."""

from __future__ import annotations

import json
from pathlib import Path

from . import EXIT_INVALID, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError
from .extras import require_extra

# Files of a finished or running training run: a new run does not silently replace them.
RUN_FILES = ("best.pt", "last.pt", "metrics.json")


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a baseline from a recipe (moviefib recipes list)",
        description="Train a baseline. Every recipe key can be overridden with --set section.key=value "
                    "(TOML values: --set train.lr=1e-3 --set data.dataset='\"my_data\"' or a bare string). "
                    "The recipe is checked before anything runs. Under torchrun, train.batch_size is the "
                    "global batch, split over the processes.")
    p.add_argument("recipe", help="a packaged recipe's name (moviefib recipes list), e.g. text_only, "
                                  "or a recipe TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe key (repeatable)")
    p.add_argument("--dataset", help="dataset folder (same as --set data.dataset=...)")
    p.add_argument("--features-dir", help="folder of the feature stores (same as --set features.dir=...)")
    p.add_argument("--out", help="run folder (same as --set train.out_dir=...)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (same as --set train.device=...)")
    p.add_argument("--resume", metavar="LAST_PT", help="continue from a run's last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a run folder that already holds a run (its files are replaced)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (same as --set train.progress=false)")
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
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_predict)


def _invalid_input_errors() -> tuple[type[Exception], ...]:
    """Library exceptions that mean bad input (exit 3), as opposed to bugs."""
    from ..data import FeatureSetupError, MissingFeaturesError, VocabularyError
    from ..dataset import DatasetError
    from ..distributed import LaunchError
    from ..features.store import StoreError
    from ..models import SettingError
    from ..train import CheckpointError, ConfigError, ScoringError

    return (ConfigError, CheckpointError, DatasetError, StoreError, MissingFeaturesError, VocabularyError,
            FeatureSetupError, SettingError, ScoringError, LaunchError)


def _unavailable_errors() -> tuple[type[Exception], ...]:
    """Library exceptions that mean a resource is missing here (exit 5): a device, a model's extra."""
    from ..devices import DeviceUnavailableError
    from ..models import ModelUnavailableError

    return DeviceUnavailableError, ModelUnavailableError


def _overrides(args) -> list[str]:
    # The command shows progress bars unless told not to; first, so that a --set of it wins.
    overrides = ["train.progress=true", *args.overrides]
    for flag, key in ((args.dataset, "data.dataset"), (args.features_dir, "features.dir"), (args.out, "train.out_dir"),
                      (args.device, "train.device"), (args.resume, "train.resume")):
        if flag is not None:
            overrides.append(f"{key}={json.dumps(flag)}")
    if args.no_progress:
        overrides.append("train.progress=false")
    return overrides


def _check_fresh_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over another one's files unless told to (--resume or --overwrite)."""
    if resume or overwrite or not out.is_dir():
        return
    held = [f for f in RUN_FILES if (out / f).exists()]
    if held:
        raise CLIError(f"{out}: already holds a run ({', '.join(held)}); continue it with --resume "
                       f"{out / 'last.pt'}, or start again with --overwrite", EXIT_INVALID)


def _check_device_flag(device: str | None) -> None:
    """--device is a flag: a name that is no device is a usage error naming it, before any work."""
    from ..devices import device_problem

    problem = None if device is None else device_problem(device)
    if problem is not None:
        raise CLIError(f"--device {problem}", EXIT_USAGE)


def _load_config(args):
    """The recipe with the flags applied; a malformed --set is a usage error naming it (exit 2)."""
    from ..train import OverrideError, load_config

    try:
        return load_config(args.recipe, _overrides(args))
    except OverrideError as exc:  # the flags' own overrides are well-formed: this one is a --set
        raise CLIError(f"--set {exc.assignment!r}: {exc.reason}", EXIT_USAGE) from None


def _run(args, config):
    """``(training result, evaluation or None)``: the library trains (and, --score, predicts and scores)."""
    from .. import train as library

    if config.train.out_dir:
        _check_fresh_run_folder(Path(config.train.out_dir), resume=bool(config.train.resume),
                                overwrite=args.overwrite)
    if not args.score:
        return library.train(config), None
    scored = library.train_and_score(config)
    return scored.result, scored.evaluation


def _train(args) -> int:
    _check_device_flag(args.device)
    require_extra("moviefib train", "train", "torch", "h5py")
    from ..data import MissingFeaturesError
    from ..distributed import distributed_env

    try:
        config = _load_config(args)
        result, evaluation = _run(args, config)
        main_process = distributed_env().is_main
    except MissingFeaturesError as exc:
        raise CLIError(f"{exc}; leave them out with --set data.missing=skip", EXIT_INVALID) from None
    except _invalid_input_errors() as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    except _unavailable_errors() as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    if not main_process:
        return 0  # under torchrun, rank 0 reports
    print(f"{config.model.name}: best val accuracy {result.best_val_acc:.4f} at epoch {result.best_epoch} "
          f"({result.epochs_run} epochs); checkpoint {result.best_checkpoint}")
    if evaluation is not None:
        from ..evaluate import format_table

        print(format_table(evaluation), end="")
    return 0


def _check_submission_path(out: Path) -> None:
    """Refuse, before the model runs, an --out that is a folder or lies under a file."""
    if out.is_dir():
        raise CLIError(f"--out {out}: is a directory; give the submission file to write (e.g. {out / 'test.tsv'})",
                       EXIT_INVALID)
    from ..fileio import file_in_the_way

    blocker = file_in_the_way(out)
    if blocker is not None:
        raise CLIError(f"--out {out}: {blocker} is a file, not a folder", EXIT_INVALID)


def _predict(args) -> int:
    if args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: must be at least 1", EXIT_USAGE)
    _check_device_flag(args.device)
    require_extra("moviefib predict", "train", "torch", "h5py")
    from ..data import MissingFeaturesError
    from ..train import predict, write_predictions

    out = Path(args.out)
    _check_submission_path(out)
    try:
        answers = predict(args.checkpoint, args.dataset, args.split, features_dir=args.features_dir,
                          device=args.device, batch_size=args.batch_size,
                          missing="skip" if args.skip_missing else "error", progress=not args.no_progress)
    except MissingFeaturesError as exc:
        raise CLIError(f"{exc}; leave them out with --skip-missing", EXIT_INVALID) from None
    except _invalid_input_errors() as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    except _unavailable_errors() as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    try:
        write_predictions(answers, out)
    except OSError as exc:  # no room, no permission, a parent that is a file
        raise CLIError(f"--out {out}: cannot write the submission ({exc.strerror or exc})", EXIT_INVALID) from None
    print(f"wrote {len(answers)} answers to {out}")
    return 0
