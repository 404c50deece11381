"""Issue 13's new surfaces, used as a hostile user would: the old ``moviefib.build`` imports, device
names that torch misreads, and what the evaluator does with odd splits, groups and folders."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moviefib.devices import device_problem

ROOT = Path(__file__).resolve().parents[1]

# moviefib/build/__init__.py's __all__ in the release before the rename, as scripts imported it.
OLD_BUILD_ALL = (
    "BuildError", "BuildOptions", "BuildReport", "Question", "build_dataset", "build_questions",
    "import_dataset", "make_question", "question_id", "sentence_id", "write_dataset",
    "ImportedRow", "Loaded", "SentenceRecord", "from_descriptions", "generic_record", "read_activitynet",
    "read_fib_import", "read_generic", "split_by_movie", "split_from_filename",
    "VocabSpec", "read_vocab_file", "select_vocab", "MODES", "Word", "align", "passes_rule", "select_blanks",
)
OLD_BUILD_SUBMODULES = ("builder", "card", "fidelity", "inputs", "tagging", "vocab", "words")


# ------------------------------------------------------------------------------------ moviefib.build

def test_every_name_the_old_build_package_exported_is_still_importable():
    old = importlib.import_module("moviefib.build")
    new = importlib.import_module("moviefib.questions")
    assert set(OLD_BUILD_ALL) <= set(old.__all__)
    for name in OLD_BUILD_ALL:
        assert getattr(old, name) is getattr(new, name), name


@pytest.mark.parametrize("sub", OLD_BUILD_SUBMODULES)
def test_the_old_submodules_are_the_new_ones_under_their_old_names(sub):
    # What scripts wrote: ``from moviefib.build.tagging import Tagger`` (bench_build.py did).
    code = (f"import moviefib.build.{sub} as old, moviefib.questions.{sub} as new\n"
            f"from moviefib.build import {sub} as attr\n"
            f"assert old is new is attr, (old, new, attr)\n"
            f"import sys; assert not any(m in sys.modules for m in ('spacy', 'torch')), 'a heavy import'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def test_an_error_of_the_old_name_is_the_error_of_the_new_one():
    from moviefib.build.builder import BuildError as Old
    from moviefib.questions import BuildError as New

    assert Old is New


def test_importing_moviefib_does_not_import_the_old_name():
    code = "import sys, moviefib; assert 'moviefib.build' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


# ------------------------------------------------------------------------------------ device names

@pytest.mark.parametrize("name", ["cuda:01", "cuda:00", "cuda:128", "cuda:255", "cuda:99999", "cuda:" + "9" * 5000])
def test_a_device_index_torch_refuses_or_wraps_round_is_refused(name):
    # torch.device("cuda:01") raises RuntimeError (a traceback in `moviefib train --device cuda:01`);
    # its index is a signed byte: "cuda:128" is cuda:-128 and "cuda:255" plain "cuda", silently.
    problem = device_problem(name)
    assert problem is not None and "\n" not in problem and len(problem) < 200 + len(name)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7", "cuda:10", "cuda:127", "cpu", "mps", "auto"])
def test_a_real_device_name_is_taken(name):
    assert device_problem(name) is None


def test_torch_agrees_with_the_rule_on_the_edges():
    torch = pytest.importorskip("torch")
    assert torch.device("cuda:127").index == 127  # the largest index taken
    with pytest.raises(RuntimeError):
        torch.device("cuda:01")
