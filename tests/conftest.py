"""Shared fixtures.

* ``shared_dir``: the real material in ``../shared`` (skips the test when it is absent).
* ``tiny_dataset``: a small dataset folder built once per session by the real builder (spaCy tagging,
  ``clean`` mode) from synthetic LSMDC description rows: splits train/val/test, four movies (two in
  train), a few hundred questions, and an extra label column ``question_type`` (from the answer's tag:
  ``object``, ``action``, ``attribute`` or ``manner``).
* ``tiny_descriptions``: the synthetic description file that ``tiny_dataset`` was built from.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Make every ``datasets`` call in the tests prove that it works offline.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_MOVIES = {
    "train": ["0001_ALPHA_MOVIE", "0002_BETA_MOVIE"],
    "val": ["1003_GAMMA_MOVIE"],
    "test": ["3004_DELTA_MOVIE"],
}
_SUBJECTS = ["SOMEONE", "The old man", "A young woman", "The tall soldier", "SOMEONE's sister"]
_VERBS = ["opens", "closes", "grabs", "drops", "carries", "watches"]
_OBJECTS = ["the door", "a heavy box", "the red car", "his letter", "the window", "a small dog"]
_TAILS = ["slowly.", "quickly.", "and smiles.", "in the dark room.", ", then turns away.", "again."]
SENTENCES_PER_MOVIE = 16


def tiny_sentences(movie_index: int) -> list[str]:
    """Deterministic synthetic sentences of one movie (the vocabulary is shared across movies)."""
    out = []
    for k in range(SENTENCES_PER_MOVIE):
        i = movie_index * 7 + k
        out.append(f"{_SUBJECTS[i % 5]} {_VERBS[(i * 5) % 6]} {_OBJECTS[(i * 7 + 1) % 6]} {_TAILS[(i + k) % 6]}")
    return out


def write_tiny_descriptions(path: Path) -> Path:
    from moviefib.formats import DescriptionRow, write_rows
    from moviefib.formats import format_timestamp as ft

    rows = []
    index = 0
    for split in ("train", "val", "test"):
        for movie in TINY_MOVIES[split]:
            for k, sentence in enumerate(tiny_sentences(index)):
                start = 60.0 + 5 * k
                end = start + 1.5 + (k % 3)
                # LSMDC pads clips shorter than 2 s symmetrically to 2 s.
                pad = max(0.0, (2.0 - (end - start)) / 2)
                clip = f"{movie}_{ft(start)}-{ft(end)}"
                rows.append(DescriptionRow(clip, start, end, start - pad, end + pad, sentence))
            index += 1
    write_rows(path, rows)
    return path


_TYPES = {"N": "object", "V": "action", "J": "attribute", "R": "manner"}


def question_type(question) -> dict[str, str]:
    return {"question_type": _TYPES.get(question.answer_pos[:1], "other")}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real material not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def shared_videos() -> dict[str, Path]:
    """The real video files of ../shared/videos by name (MPEG-2 with a start offset, h264 + aac...)."""
    videos = sorted((SHARED / "videos").glob("*")) if (SHARED / "videos").is_dir() else []
    if not videos:
        pytest.skip(f"{SHARED / 'videos'} is absent: no real videos to decode")
    return {p.name: p for p in videos}


@pytest.fixture(scope="session")
def tiny_descriptions(tmp_path_factory) -> Path:
    return write_tiny_descriptions(tmp_path_factory.mktemp("tiny_src") / "tiny_annos.csv")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_descriptions, spacy_tagger) -> Path:
    from dataclasses import replace

    from moviefib.formats import movie_of
    from moviefib.questions import BuildOptions, VocabSpec, build_dataset, from_descriptions

    loaded = from_descriptions(tiny_descriptions, split="train")
    split_of = {m: s for s, movies in TINY_MOVIES.items() for m in movies}
    records = [replace(r, split=split_of[movie_of(r.clip_id)]) for r in loaded.records]
    folder = tmp_path_factory.mktemp("tiny") / "tiny_fib"
    build_dataset(records, folder, BuildOptions(vocab=VocabSpec(top_k=None, split="train")),
                  tagger=spacy_tagger, label_fn=question_type, sources=[str(tiny_descriptions)],
                  name="tiny MovieFIB test set")
    return folder


@pytest.fixture(scope="session")
def spacy_tagger():
    """One spaCy tagger (single process) for the whole session; loading the model takes a second."""
    from moviefib.questions.tagging import Tagger

    return Tagger()


# ------------------------------------------------------------------ files written by earlier releases

# Files written by an earlier release still load (tests/test_compat.py). The releases whose files must
# load: commits of main (the last before issue 13's restructuring).
COMPAT_RELEASES = ("38b4fbb",)
# What make_fixtures.py needs of a release: its package, its recipes and the toy task of its tests.
_RELEASE_PATHS = ("moviefib", "baselines", "tests/test_train.py")


def _archive(commit: str, into: Path) -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("no git history here: the earlier release cannot be checked out")
    proc = subprocess.run([git, "-C", str(ROOT), "archive", "--format=tar", commit, *_RELEASE_PATHS],
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"release {commit} is not in this clone's history (shallow clone?): "
                    f"{proc.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(into, filter="data")


@pytest.fixture(scope="session", params=COMPAT_RELEASES)
def compat_release(request, tmp_path_factory) -> Path:
    """The files release ``request.param`` writes (``tests/compat/make_fixtures.py``), made by its own
    code: its tree comes from git history; without that history the test skips with a reason."""
    for module in ("torch", "h5py", "av"):
        pytest.importorskip(module)
    tree = tmp_path_factory.mktemp(f"release_{request.param}")
    _archive(request.param, tree)
    (tree / "tests" / "compat").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "compat" / "make_fixtures.py", tree / "tests" / "compat")
    out = tree / "files"
    # The release's package first on the path, so that nothing of this checkout is imported (checked).
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, str(tree / "tests" / "compat" / "make_fixtures.py"), str(out)],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path((out / "made_by.txt").read_text()).is_relative_to(tree)
    return out
