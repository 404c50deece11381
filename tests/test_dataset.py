"""The Python API: loading a dataset folder (MovieFIB and plain ``datasets``), tables, the question view."""

import os
import subprocess
import sys

import pyarrow as pa
import pytest

import moviefib
from moviefib.dataset import (
    DatasetError,
    QuestionItem,
    QuestionView,
    available_splits,
    read_answer_counts,
    read_blank_vocab,
    read_keys,
    read_table,
    split_question,
)
from moviefib.schema import COLUMN_NAMES


def test_offline_env():
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"


def test_load_dataset_two_lines(tiny_dataset, tmp_path):
    ds = moviefib.load_dataset(tiny_dataset, cache_dir=tmp_path / "cache")
    assert list(ds) == ["train", "val", "test"]
    assert ds["train"].column_names == list(COLUMN_NAMES) + ["question_type"]
    assert ds["train"].features["word_index"].dtype == "int32"
    row = ds["val"][0]
    assert row["sentence"][row["char_start"]:row["char_end"]] == row["answer"]
    assert set(ds["train"]["question_type"]) <= {"object", "action", "attribute", "manner", "other"}
    mem = moviefib.load_dataset(tiny_dataset, splits=["val"], in_memory=True)
    assert list(mem) == ["val"] and mem["val"]["question_id"] == ds["val"]["question_id"]


def test_plain_datasets_load_dataset_uses_card(tiny_dataset, tmp_path):
    import datasets

    ds = datasets.load_dataset(str(tiny_dataset), cache_dir=str(tmp_path / "cache"))
    assert sorted(ds) == ["test", "train", "val"]
    assert ds["test"].num_rows == read_table(tiny_dataset, "test").num_rows


def test_plain_load_offline_in_fresh_process(tiny_dataset, tmp_path):
    code = ("import datasets, sys; d = datasets.load_dataset(sys.argv[1], cache_dir=sys.argv[2]); "
            "print(sorted(d), d['train'].num_rows)")
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_dataset), str(tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("['test', 'train', 'val']")


def test_read_table_and_vocab_files(tiny_dataset):
    t = read_table(tiny_dataset, "train")
    assert isinstance(t, pa.Table) and t.num_rows > 100
    assert available_splits(tiny_dataset) == ["train", "val", "test"]
    counts = read_answer_counts(tiny_dataset)
    assert sum(counts.values()) == t.num_rows
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    vocab = read_blank_vocab(tiny_dataset)
    assert {a.lower() for a in t.column("answer").to_pylist()} <= set(vocab)


def test_errors(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="no split 'dev'"):
        read_table(tiny_dataset, "dev")
    with pytest.raises(DatasetError, match="no such dataset folder"):
        moviefib.load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a MovieFIB dataset folder"):
        read_table(tmp_path / "empty", "train")
    with pytest.raises(DatasetError, match="no answer key"):
        read_keys(tiny_dataset, "test")
    bad = tmp_path / "counts.tsv"
    bad.write_text("door\tmany\n")
    with pytest.raises(DatasetError, match="counts.tsv:1"):
        read_answer_counts(bad)


@pytest.mark.parametrize("question,left,right", [
    ("someone opens the _____ slowly", ["someone", "opens", "the"], ["slowly"]),
    ("_____ someone runs", [], ["someone", "runs"]),
    ("he runs _____", ["he", "runs"], []),
    ("He opens the _____.", ["He", "opens", "the"], ["."]),
    ('She says "_____," then', ["She", "says", '"'], [',"', "then"]),
    ("someone h_____s over her", ["someone", "h"], ["s", "over", "her"]),
])
def test_split_question(question, left, right):
    assert split_question(question) == (left, right)


def test_split_question_needs_blank():
    with pytest.raises(ValueError, match="no blank"):
        split_question("no blank here")


def test_question_view(tiny_dataset):
    t = read_table(tiny_dataset, "val")
    answers = t.column("answer").to_pylist()
    vocab = {a: i for i, a in enumerate(sorted(set(answers))[:-1])}  # leave the last answer out
    view = QuestionView(t, vocab)
    assert len(view) == t.num_rows
    item = view[0]
    assert isinstance(item, QuestionItem) and item.question_id == t.column("question_id")[0].as_py()
    assert " ".join(item.left + ("_____",) + item.right) == " ".join(t.column("question")[0].as_py().split())
    indices = [it.answer_index for it in view]
    assert all((i == -1) == (a not in vocab) for i, a in zip(indices, answers))
    assert -1 in indices and view[-1] == view[len(view) - 1] and len(view[2:5]) == 3
    with pytest.raises(IndexError):
        view[len(view)]
    with pytest.raises(AttributeError):
        item.answer = "x"  # frozen


def test_question_view_over_shuffled_dataset_and_blind(tiny_dataset, tmp_path):
    ds = moviefib.load_dataset(tiny_dataset, in_memory=True)["train"].shuffle(seed=0).select(range(10))
    view = QuestionView(ds, {})
    assert [it.question_id for it in view] == ds["question_id"]
    test = read_table(tiny_dataset, "test")
    blind = test.set_column(COLUMN_NAMES.index("answer"), "answer", pa.nulls(test.num_rows, pa.string()))
    assert {it.answer_index for it in QuestionView(blind, {"door": 0})} == {-1}
    assert {it.answer for it in QuestionView(blind, {})} == {None}


def test_builder_and_readers_list_splits_in_one_order(spacy_tagger, tmp_path):
    import json

    from moviefib.questions import BuildOptions, SentenceRecord, VocabSpec, build_dataset
    from moviefib.schema import SPLIT_ORDER, sorted_splits

    names = ["zeta", "test", "validation", "training", "blindtest", "alpha", "val"]
    records = [SentenceRecord(f"000{i}_MOVIE_{i}_00.01.00.000-00.01.02.000", f"000{i}_MOVIE_{i}", split,
                              60.0, 62.0, 60.0, 62.0, "The man opens the door.")
               for i, split in enumerate(names)]
    folder = tmp_path / "splits"
    build_dataset(records, folder, BuildOptions(vocab=VocabSpec(top_k=None, split="training")),
                  tagger=spacy_tagger)
    want = [s for s in SPLIT_ORDER if s in names] + ["alpha", "zeta"]
    assert sorted_splits(names + ["val"]) == want
    stats = json.loads((folder / "stats.json").read_text())
    assert list(stats["splits"]) == want  # the builder's order (stats, card)
    assert available_splits(folder) == want  # the readers'
