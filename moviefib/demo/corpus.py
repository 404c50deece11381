"""The demo corpus: described videos generated on the fly, in the exact LSMDC 2016 layout.

LSMDC cannot ship, so the demo makes its own: several "movies" of short clips in which a coloured
object moves over a textured background, each clip with one (sometimes two) description sentences.
:func:`generate_corpus` writes::

    <out>/
      LSMDC16_annos_training.csv   6-column LSMDC description files (tab separated, no header),
      LSMDC16_annos_val.csv        one per split; movies are disjoint between splits
      LSMDC16_annos_test.csv
      word_types.jsonl             the type of every word of every sentence (below)
      corpus.json                  the settings, counts and file sizes; ``"complete": true`` is written last
      <movie>/<clip_id>.avi        the clips (MPEG-4 part 2 in AVI, written with PyAV)

Clip ids follow LSMDC: ``<4-digit movie id>_<MOVIE_NAME>_<start>-<end>`` with the aligned times;
movie ids are ``9001``, ``9002``... (no LSMDC movie uses ``9xxx``). Clips shorter than 2 s are padded
symmetrically to 2 s (the EXTRACTED times), and the video file covers the extracted span:
``round((end_extracted - start_extracted) * fps)`` frames of ``frame_size`` x ``frame_size`` pixels.
``<out>`` is the video root: the clip of a row is ``ClipId.parse(clip_id).video_path(out)``.

``word_types.jsonl`` has one JSON object per annotation row, in the order of the rows (training, val,
then test)::

    {"split": "training", "clip_id": "9001_...", "sentence": "A red ball spins slowly to the left.",
     "types": ["text", "appearance", "appearance", "motion", "motion", "text", "text", "motion"],
     "roles": ["", "colour", "shape", "action", "speed", "", "", "direction"]}

``types[i]`` and ``roles[i]`` belong to word ``i`` of ``sentence.split()`` (whitespace words, so the
index is the question tables' ``word_index``; punctuation stays attached to its word). ``types`` are
``text`` (predictable from the rest of the sentence), ``appearance`` (colour, shape, size, backdrop: one
frame shows it) or ``motion`` (action, speed, direction: needs several frames); see
:mod:`moviefib.demo.grammar`. ``(clip_id, sentence)`` is unique. :func:`read_word_types` reads the file.

The corpus is a pure function of its :class:`CorpusConfig` (and of the PyAV/FFmpeg version that
encodes it): each clip draws from its own random streams, seeded by ``(seed, movie, clip)``, so the same
seed gives byte-identical files, in any order and with any number of workers. Rerun on a folder that
holds an unfinished corpus of the same settings, it keeps the clips already written and makes the rest.
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..fileio import atomic_output, atomic_write
from ..formats import DescriptionRow, format_timestamp, write_rows
from .grammar import WORD_TYPES, Sentence, describe, draw_scene_words
from .scenes import SceneSpec, layout_scene, render

log = logging.getLogger(__name__)

SPLITS = ("training", "val", "test")
ANNOTATION_FILE = "LSMDC16_annos_{split}.csv"
WORD_TYPES_FILE = "word_types.jsonl"
MANIFEST_FILE = "corpus.json"
# Bump when the same settings would give different files, so an old folder is not mistaken for new.
GENERATOR_VERSION = 1
_FIRST_MOVIE_ID = 9001
_MIN_EXTRACTED_MS = 2000
_CODEC = "mpeg4"
# Constant MPEG-4 quantiser (2 finest .. 31): 3 keeps colours and edges clean (PSNR ~34 dB against
# the rendered frames, at ~17 kB per 112 px clip). Bit-rate control instead blurs moving objects badly.
_QSCALE = "3"

_NAME_ADJ = ("SILENT", "LAST", "BLUE", "HIDDEN", "LONG", "FALLING", "BRIGHT", "SECRET", "BROKEN", "GOLDEN")
_NAME_NOUN = ("SHAPES", "CIRCLE", "ORBIT", "GARDEN", "HARBOR", "SIGNAL", "WINTER", "MIRROR", "RIVER", "LANTERN")

# Named sizes: "tiny" for tests, "small" for the CI demo run, "default" for the demo, "large" for benchmarks.
SIZE_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"movies": 3, "clips_per_movie": 4},
    "small": {"movies": 6, "clips_per_movie": 40},
    "default": {"movies": 8, "clips_per_movie": 50},
    "large": {"movies": 40, "clips_per_movie": 500},
}


class CorpusError(ValueError):
    """Bad settings, or an output folder that cannot take the corpus."""


@dataclass(frozen=True)
class CorpusConfig:
    """The settings of a generated corpus; the files are a function of these alone.

    Attributes:
        seed: random seed.
        movies: number of movies (at least 3: training, val and test movies are disjoint).
        clips_per_movie: clips per movie.
        fps: frame rate of the clips.
        frame_size: width and height of the frames, pixels (even, at least 32).
        heldout_fraction: share of the movies given to val, and again to test (at least one each).
        second_sentence_rate: probability that a clip carries a second sentence (LSMDC clip ids are
            not unique either).
        min_seconds, max_seconds: range of the aligned clip durations (multiples of 0.25 s).
    """

    seed: int = 0
    movies: int = 8
    clips_per_movie: int = 50
    fps: int = 16
    frame_size: int = 112
    heldout_fraction: float = 0.1
    second_sentence_rate: float = 0.1
    min_seconds: float = 1.0
    max_seconds: float = 2.5

    @classmethod
    def preset(cls, size: str = "default", **overrides) -> CorpusConfig:
        """A named size (see SIZE_PRESETS) with some fields overridden (None values are ignored)."""
        if size not in SIZE_PRESETS:
            raise CorpusError(f"unknown corpus size {size!r} (choose from {', '.join(SIZE_PRESETS)})")
        values = dict(SIZE_PRESETS[size])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        problems = []
        if self.movies < 3:
            problems.append(f"movies must be at least 3 (one each for training, val and test), got {self.movies}")
        if self.clips_per_movie < 1:
            problems.append(f"clips_per_movie must be at least 1, got {self.clips_per_movie}")
        if self.movies > 999:
            problems.append(f"movies must be at most 999 (4-digit movie ids 9001..9999), got {self.movies}")
        if self.seed < 0:  # numpy's generators, seeded by (seed, movie, clip), take no negative entry
            problems.append(f"seed must be >= 0, got {self.seed}")
        if not 1 <= self.fps <= 120:
            problems.append(f"fps must be between 1 and 120, got {self.fps}")
        if self.frame_size < 32 or self.frame_size % 2:
            problems.append(f"frame_size must be even and at least 32, got {self.frame_size}")
        if not 0 < self.heldout_fraction < 0.5:
            problems.append(f"heldout_fraction must be in (0, 0.5), got {self.heldout_fraction}")
        if not 0 <= self.second_sentence_rate <= 1:
            problems.append(f"second_sentence_rate must be in [0, 1], got {self.second_sentence_rate}")
        if not (0.25 <= self.min_seconds <= self.max_seconds <= 60):
            problems.append(f"need 0.25 <= min_seconds <= max_seconds <= 60, got "
                            f"{self.min_seconds}..{self.max_seconds}")
        if problems:
            raise CorpusError("; ".join(problems))

    def split_of_movies(self) -> list[str]:
        """The split of each movie, in movie order: the last movies are val, then test."""
        held = max(1, round(self.movies * self.heldout_fraction))
        train = self.movies - 2 * held
        if train < 1:
            held = (self.movies - 1) // 2
            train = self.movies - 2 * held
        return ["training"] * train + ["val"] * held + ["test"] * held


@dataclass(frozen=True)
class ClipPlan:
    """One clip of the corpus: where it sits in its movie, what it shows and how it is described.

    Attributes:
        clip_id: the LSMDC clip id (aligned times).
        split: ``training``, ``val`` or ``test``.
        movie: the movie folder name.
        start_aligned, end_aligned, start_extracted, end_extracted: seconds into the movie.
        scene: what the video shows (see :class:`moviefib.demo.scenes.SceneSpec`).
        sentences: its description sentences with word types (one or two).
    """

    clip_id: str
    split: str
    movie: str
    start_aligned: float
    end_aligned: float
    start_extracted: float
    end_extracted: float
    scene: SceneSpec
    sentences: tuple[Sentence, ...]

    def rows(self) -> list[DescriptionRow]:
        return [DescriptionRow(self.clip_id, self.start_aligned, self.end_aligned, self.start_extracted,
                               self.end_extracted, s.text) for s in self.sentences]

    def video_path(self, root: str | os.PathLike) -> Path:
        return Path(root) / self.movie / f"{self.clip_id}.avi"


@dataclass(frozen=True)
class CorpusInfo:
    """What :func:`generate_corpus` made (or found).

    Attributes:
        path: the corpus folder (also the video root).
        config: its settings.
        clips: clips per split.
        sentences: annotation rows per split.
        word_types: number of words of each type over all sentences.
        written: clips encoded by this call (0 when an existing corpus was reused).
        reused: True when the folder already held the complete corpus.
    """

    path: Path
    config: CorpusConfig
    clips: dict[str, int]
    sentences: dict[str, int]
    word_types: dict[str, int]
    written: int
    reused: bool

    def annotation_file(self, split: str) -> Path:
        return self.path / ANNOTATION_FILE.format(split=split)


def _movie_name(index: int) -> str:
    # (7a + b) mod 10 pairs each adjective with every noun before any name repeats (100 movies).
    noun = (7 * (index % 10) + index // 10) % 10
    return f"{_FIRST_MOVIE_ID + index:04d}_{_NAME_ADJ[index % 10]}_{_NAME_NOUN[noun]}"


def _palette(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    # Dark, unsaturated backgrounds, so that every object colour (white included) stands out.
    hue = rng.uniform()
    top = colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.3), rng.uniform(0.30, 0.42))
    bottom = colorsys.hsv_to_rgb((hue + rng.uniform(-0.1, 0.1)) % 1, rng.uniform(0.1, 0.3),
                                 rng.uniform(0.10, 0.22))
    return (tuple(int(round(c * 255)) for c in top), tuple(int(round(c * 255)) for c in bottom))


def plan_corpus(config: CorpusConfig) -> list[ClipPlan]:
    """Every clip of the corpus, without writing anything (cheap: no rendering)."""
    steps_min, steps_max = round(config.min_seconds * 4), round(config.max_seconds * 4)
    plans = []
    for m, split in enumerate(config.split_of_movies()):
        movie = _movie_name(m)
        movie_rng = np.random.default_rng([config.seed, m])
        palette = _palette(movie_rng)
        texture_seed = int(movie_rng.integers(2 ** 31))
        # Work in milliseconds on a 250 ms grid: padding halves are then whole milliseconds.
        t = int(movie_rng.integers(240, 2400)) * 250
        for c in range(config.clips_per_movie):
            t += int(movie_rng.integers(2, 120)) * 250
            duration = int(movie_rng.integers(steps_min, steps_max + 1)) * 250
            start, end = t, t + duration
            pad = max(0, _MIN_EXTRACTED_MS - duration) // 2
            ext_start, ext_end = start - pad, end + pad
            t = end
            clip_id = f"{movie}_{format_timestamp(start / 1000)}-{format_timestamp(end / 1000)}"
            scene_rng = np.random.default_rng([config.seed, m, c, 0])
            text_rng = np.random.default_rng([config.seed, m, c, 1])
            words = draw_scene_words(scene_rng)
            scene = layout_scene(
                words, scene_rng, width=config.frame_size, height=config.frame_size, fps=config.fps,
                num_frames=round((ext_end - ext_start) * config.fps / 1000), palette=palette,
                texture_seed=texture_seed)
            sentences = [describe(words, text_rng)]
            if text_rng.random() < config.second_sentence_rate:
                second = describe(words, text_rng)
                if second.text != sentences[0].text:
                    sentences.append(second)
            plans.append(ClipPlan(clip_id, split, movie, start / 1000, end / 1000, ext_start / 1000,
                                  ext_end / 1000, scene, tuple(sentences)))
    return plans


def write_clip(path: str | os.PathLike, scene: SceneSpec) -> Path:
    """Render ``scene`` and encode it to ``path`` (AVI, MPEG-4 part 2) atomically.

    One encoder thread and FFmpeg's bit-exact flags make the bytes depend on the frames alone.
    """
    import av

    path = Path(path)
    with atomic_output(path) as tmp, \
            av.open(str(tmp), "w", format="avi", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(_CODEC, rate=scene.fps)
        stream.width, stream.height = scene.width, scene.height
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        # The quantiser is pinned through qmin = qmax: PyAV frames carry no per-frame quality.
        stream.codec_context.options = {"flags": "+bitexact+qscale", "qmin": _QSCALE, "qmax": _QSCALE}
        for frame in render(scene):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_clip_job(job: tuple[str, SceneSpec]) -> str:
    write_clip(job[0], job[1])
    return job[0]


def _manifest(config: CorpusConfig, plans: list[ClipPlan], complete: bool,
              files: dict[str, int] | None = None) -> dict:
    """``files``: the size of every written file (clips, annotations), recorded when complete."""
    import av

    return {
        "generator": "moviefib.demo.corpus",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "codec": _CODEC,
        "pyav_version": av.__version__,
        "complete": complete,
        "clips": _count(p.split for p in plans),
        "sentences": _count(p.split for p in plans for _ in p.sentences),
        "word_types": _count(t for p in plans for s in p.sentences for t in s.types),
        **({"files": files} if files is not None else {}),
    }


def _file_sizes(out: Path, paths: Iterable[Path]) -> dict[str, int]:
    """Each path's size in bytes (None when absent), keyed by its path relative to ``out``."""
    sizes = {}
    for path in paths:
        try:
            sizes[path.relative_to(out).as_posix()] = path.stat().st_size
        except FileNotFoundError:
            sizes[path.relative_to(out).as_posix()] = None
    return sizes


def _changed_files(out: Path, manifest: dict, paths: list[Path]) -> list[Path] | None:
    """The files of a complete corpus that are missing or changed in size since it was written (a clip
    cut short, replaced, deleted); None when the manifest records no sizes (written before they were)."""
    recorded = manifest.get("files")
    if not isinstance(recorded, dict):
        return None
    now = _file_sizes(out, paths)
    return [out / rel for rel, size in now.items() if size is None or recorded.get(rel) != size]


def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _check_folder(out: Path, config: CorpusConfig) -> dict | None:
    """The manifest of a corpus of the same settings already in ``out`` (None when ``out`` is new)."""
    manifest_path = out / MANIFEST_FILE
    if not out.exists():
        return None
    if not out.is_dir():
        raise CorpusError(f"{out} exists and is not a folder")
    if not manifest_path.exists():
        if any(out.iterdir()):
            raise CorpusError(f"{out} is not empty and holds no {MANIFEST_FILE}: "
                              "choose a new or empty folder for the corpus")
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        old = manifest["config"]
        version = manifest["generator_version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{manifest_path}: unreadable corpus manifest ({exc})") from None
    if version != GENERATOR_VERSION or old != asdict(config):
        differ = sorted(k for k in asdict(config) if old.get(k) != getattr(config, k))
        what = f"settings ({', '.join(differ)})" if differ else f"generator version ({version})"
        raise CorpusError(f"{out} holds a corpus made with other {what}: "
                          "choose a new folder, or delete this one to regenerate")
    return manifest


def generate_corpus(out: str | os.PathLike, config: CorpusConfig | None = None, *, workers: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> CorpusInfo:
    """Write the corpus of ``config`` into ``out`` (see the module docstring), or reuse it.

    Args:
        out: the corpus folder; created if needed. It must be new, empty, or hold a corpus made with
            the same settings (complete: reused as is; unfinished: completed).
        config: the settings (default: ``CorpusConfig()``, the demo size).
        workers: processes that render and encode clips (the files do not depend on it).
        progress: called as ``progress(done, total)`` after each clip (skipped ones included).

    Raises:
        CorpusError: bad settings, or ``out`` holds something else.
    """
    config = config or CorpusConfig()
    if workers < 1:
        raise CorpusError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    old = _check_folder(out, config)
    plans = plan_corpus(config)
    info = dict(path=out, config=config, clips=_count(p.split for p in plans),
                sentences=_count(p.split for p in plans for _ in p.sentences),
                word_types=_count(t for p in plans for s in p.sentences for t in s.types))
    files = [p.video_path(out) for p in plans] + [out / ANNOTATION_FILE.format(split=s) for s in SPLITS] + \
        [out / WORD_TYPES_FILE]
    if old is not None and old.get("complete") and _reuse_or_repair(out, old, files):
        if progress:
            progress(len(plans), len(plans))
        return CorpusInfo(**info, written=0, reused=True)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MANIFEST_FILE, json.dumps(_manifest(config, plans, False), indent=2) + "\n")
    written = _write_clips(out, plans, workers=workers, progress=progress)
    _write_texts(out, plans)
    sizes = _file_sizes(out, files)
    atomic_write(out / MANIFEST_FILE, json.dumps(_manifest(config, plans, True, sizes), indent=2) + "\n")
    log.info("corpus written to %s: %s clips, %s sentences", out, info["clips"], info["sentences"])
    return CorpusInfo(**info, written=written, reused=False)


def _reuse_or_repair(out: Path, manifest: dict, files: list[Path]) -> bool:
    """Whether the complete corpus in ``out`` can be reused as it is; when some of its ``files`` changed
    since it was written, the changed clips are deleted (to be made again) and it cannot."""
    # A stat per file, no decoding: cheap enough for every rerun of the demo.
    changed = _changed_files(out, manifest, files)
    if changed == []:
        log.info("reusing the complete corpus in %s", out)
        return True
    if changed:
        log.warning("%s: %d file(s) changed or missing since the corpus was written (first: %s); "
                    "regenerating them", out, len(changed), changed[0])
        for path in changed:
            if path.suffix == ".avi":  # the annotation files are rewritten anyway
                path.unlink(missing_ok=True)
    return False


def _write_clips(out: Path, plans: list[ClipPlan], *, workers: int,
                 progress: Callable[[int, int], None] | None) -> int:
    """Encode the clips not yet in ``out`` (``workers`` processes); returns how many were written."""
    for stale in out.glob("*/.*.avi.*.tmp"):
        stale.unlink()
    jobs = [(str(p.video_path(out)), p.scene) for p in plans if not p.video_path(out).exists()]
    if len(jobs) < len(plans):
        log.info("%d of %d clips already written in %s; making the rest", len(plans) - len(jobs),
                 len(plans), out)
    done = len(plans) - len(jobs)
    if progress:
        progress(done, len(plans))
    for _ in _encoded(jobs, workers):
        done += 1
        if progress:
            progress(done, len(plans))
    return len(jobs)


def _encoded(jobs: list[tuple[str, SceneSpec]], workers: int) -> Iterator[str]:
    """Encode the clips of ``jobs`` (in this process, or in ``workers`` processes); yields each path
    once it is written."""
    if workers == 1 or len(jobs) < 2:
        yield from map(_write_clip_job, jobs)
        return
    import multiprocessing

    # spawn, not fork: the caller (the demo) may have torch and its thread pools loaded.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_write_clip_job, jobs, chunksize=8)


def _write_texts(out: Path, plans: list[ClipPlan]) -> None:
    """The annotation file of each split and ``word_types.jsonl`` (rows in split, then plan order)."""
    for split in SPLITS:
        write_rows(out / ANNOTATION_FILE.format(split=split),
                   (row for p in plans if p.split == split for row in p.rows()))
    lines = []
    for split in SPLITS:
        for p in plans:
            if p.split != split:
                continue
            for s in p.sentences:
                lines.append(json.dumps({"split": split, "clip_id": p.clip_id, "sentence": s.text,
                                         "types": list(s.types), "roles": list(s.roles)},
                                        ensure_ascii=False))
    atomic_write(out / WORD_TYPES_FILE, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class WordTypes:
    """The types of the words of one annotation sentence (one line of ``word_types.jsonl``).

    Attributes:
        split, clip_id, sentence: the annotation row.
        types: per whitespace word of ``sentence``: ``text``, ``appearance`` or ``motion``.
        roles: per word, the scene attribute it names, ``""`` for a text word.
    """

    split: str
    clip_id: str
    sentence: str
    types: tuple[str, ...]
    roles: tuple[str, ...]


def read_word_types(path: str | os.PathLike) -> dict[tuple[str, str], WordTypes]:
    """Read ``word_types.jsonl`` (or the corpus folder holding it), keyed by ``(clip_id, sentence)``.

    Raises CorpusError naming the file and line of a malformed entry.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WORD_TYPES_FILE
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    entries: dict[tuple[str, str], WordTypes] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                entry = WordTypes(**{f.name: obj[f.name] for f in fields(WordTypes)})
                entry = WordTypes(entry.split, entry.clip_id, entry.sentence, tuple(entry.types),
                                  tuple(entry.roles))
            except (ValueError, KeyError, TypeError) as exc:
                raise CorpusError(f"{path}:{lineno}: malformed entry ({exc})") from None
            n = len(entry.sentence.split())
            if len(entry.types) != n or len(entry.roles) != n:
                raise CorpusError(f"{path}:{lineno}: {len(entry.types)} types and {len(entry.roles)} roles "
                                  f"for a sentence of {n} words")
            bad = sorted(set(entry.types) - set(WORD_TYPES))
            if bad:
                raise CorpusError(f"{path}:{lineno}: unknown word type(s) {bad} (expected {WORD_TYPES})")
            key = (entry.clip_id, entry.sentence)
            if key in entries:
                raise CorpusError(f"{path}:{lineno}: duplicate entry for clip {entry.clip_id}")
            entries[key] = entry
    return entries


def question_type_labels(path: str | os.PathLike) -> Callable[[object], dict[str, str]]:
    """A ``label_fn`` for :func:`moviefib.questions.build_dataset` that adds the ``question_type`` column.

    ``path`` is ``word_types.jsonl`` or the corpus folder. The returned function takes a question with
    ``record.clip_id``, ``record.sentence`` and ``word_index`` and returns ``{"question_type": type}``;
    it raises CorpusError for a sentence the file does not describe (a corpus and word types that do
    not belong together).
    """
    entries = read_word_types(path)

    def label(question) -> dict[str, str]:
        key = (question.record.clip_id, question.record.sentence)
        entry = entries.get(key)
        if entry is None:
            raise CorpusError(f"{path}: no word types for clip {key[0]} sentence {key[1]!r}")
        return {"question_type": entry.types[question.word_index]}

    return label

