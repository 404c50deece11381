"""The builder with the real spaCy tagger: blanking edge cases, ids, vocabularies, splits, blind splits,
imports, generic corpora, the CLI."""

import json

import pyarrow.parquet as pq
import pytest

from moviefib.cli import main
from moviefib.formats import BLANK, FormatError
from moviefib.questions import (
    BuildError,
    BuildOptions,
    SentenceRecord,
    VocabSpec,
    build_dataset,
    build_questions,
    generic_record,
    import_dataset,
    question_id,
    read_activitynet,
    read_fib_import,
    read_generic,
    split_by_movie,
)

CLIP = "0001_ALPHA_MOVIE_00.01.00.000-00.01.02.000"


def rec(sentence, clip=CLIP, split="train"):
    return SentenceRecord(clip, clip.rsplit("_", 1)[0], split, 60.0, 62.0, 60.0, 62.0, sentence)


def build(tagger, sentences, mode="clean", vocab=None):
    records = [s if isinstance(s, SentenceRecord) else rec(s) for s in sentences]
    tags = dict(zip([r.sentence for r in records], tagger.tag([r.sentence for r in records])))
    return build_questions(records, tags, mode, vocab)


def answers(questions):
    return [(q.answer, q.word_index) for q in questions]


def test_repeated_word_gives_two_correct_questions(spacy_tagger):
    qs, _ = build(spacy_tagger, ["The man looks at the other man."])
    mans = [q for q in qs if q.answer == "man"]
    assert [q.word_index for q in mans] == [1, 6]
    assert mans[0].question == f"The {BLANK} looks at the other man."
    assert mans[1].question == f"The man looks at the other {BLANK}."
    assert len({q.question_id for q in qs}) == len(qs)


def test_no_blank_inside_another_word(spacy_tagger):
    qs, _ = build(spacy_tagger, ["A woman greets the man."])
    assert ("woman", 1) in answers(qs) and ("man", 4) in answers(qs)
    for q in qs:
        assert q.question.replace(BLANK, q.answer) == q.record.sentence
        i = q.question.index(BLANK)
        assert q.question[i - 1] == " " and not q.question[i + len(BLANK)].isalnum()


def test_hyphens_contractions_and_punctuation(spacy_tagger):
    qs, _ = build(spacy_tagger, ['She pulls on a t-shirt, then "smiles."', "He doesn't answer."])
    got = {q.answer: q for q in qs}
    assert "t-shirt" in got and got["t-shirt"].question == f'She pulls on a {BLANK}, then "smiles."'
    assert got["smiles"].question == f'She pulls on a t-shirt, then "{BLANK}."'
    s = got["t-shirt"]
    assert s.record.sentence[s.char_start:s.char_end] == "t-shirt" and s.word_index == 4
    assert "doesn't" not in got and "answer" in got
    assert "shirt" not in got and "t" not in got


def test_someone_unk_and_nothing_to_blank(spacy_tagger):
    qs, stats = build(spacy_tagger, ["SOMEONE's brother hugs SOMEONE.", "someone hugs UNK", "It is."])
    assert {q.answer for q in qs} == {"brother", "hugs"}
    assert stats["train"].sentences == 3 and stats["train"].sentences_without_blank == 1


def test_original_casing_kept(spacy_tagger):
    qs, _ = build(spacy_tagger, ["Outside, SOMEONE Opens the Door."])
    door = next(q for q in qs if q.answer == "Door")
    assert door.question == f"Outside, SOMEONE Opens the {BLANK}." and door.record.sentence.endswith("Door.")


def test_vocabulary_restricts_blanks(spacy_tagger):
    qs, _ = build(spacy_tagger, ["The old man opens the red door."], vocab=frozenset({"door", "man"}))
    assert answers(qs) == [("man", 2), ("door", 6)]


def test_ids_stable_and_duplicates_dropped(spacy_tagger):
    # the id is a pure function of clip id, sentence and word index: the same on every machine
    assert question_id(CLIP, "The man opens the door.", 1) == "q" + __import__("hashlib").sha1(
        f"{CLIP}\tThe man opens the door.\t1".encode()).hexdigest()[:16]
    assert question_id(CLIP, "a b", 1) == "qd9b02e4b0596c3ad"
    qs, stats = build(spacy_tagger, ["The man opens the door.", "The man opens the door."])
    assert len(qs) == 3 and stats["train"].duplicates_dropped == 3
    qs2, _ = build(spacy_tagger, ["The man opens the door."])
    assert [q.question_id for q in qs2] == [q.question_id for q in qs]
    other, _ = build(spacy_tagger, [rec("The man opens the door.", clip=CLIP.replace("0001", "0002"))])
    assert not {q.question_id for q in other} & {q.question_id for q in qs}


def test_build_dataset_vocab_blind_and_stats(tmp_path, spacy_tagger):
    train = [rec(s) for s in ["The man opens the door.", "The man closes the door.", "A dog barks loudly."]]
    test = [rec(s, clip=CLIP.replace("0001_ALPHA", "0002_BETA"), split="test")
            for s in ["The man opens the window.", "The dog opens the door."]]
    out = tmp_path / "ds"
    rep = build_dataset(train + test, out, BuildOptions(vocab=VocabSpec(top_k=3), blind=("test",)),
                        tagger=spacy_tagger)
    vocab = (out / "vocab" / "blank_vocab.txt").read_text().split()
    # top 3 of the train candidates: door and man (2 each), then the first of the words seen once
    assert vocab == sorted(vocab) and len(vocab) == 3 and {"door", "man"} <= set(vocab)
    counts = dict(line.split("\t") for line in (out / "vocab" / "answer_counts.tsv").read_text().splitlines())
    assert counts["door"] == "2" and counts["man"] == "2"
    t = pq.read_table(out / "data" / "test.parquet")
    assert t.column("answer").null_count == t.num_rows > 0 and t.column("answer_pos").null_count == t.num_rows
    keys = pq.read_table(tmp_path / "ds.keys" / "test.parquet")
    assert keys.column("question_id").to_pylist() == t.column("question_id").to_pylist()
    assert set(keys.column("answer").to_pylist()) <= set(vocab)
    assert not (tmp_path / "ds.keys" / "train.parquet").exists()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["tagger"]["model"].startswith("en_core_web_sm") and stats["tagger"]["version"]
    assert stats["tagger"]["requested"] == "en_core_web_sm"  # the default; falls back to the re-upload
    assert stats["splits"]["test"]["blind"] and stats["splits"]["train"]["questions"] == rep.splits["train"].questions
    assert stats["blank_vocabulary"]["size"] == 3
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "path: data/test.parquet" in card and stats["tagger"]["model"] in card
    with pytest.raises(BuildError, match="exists"):
        build_dataset(train, out, BuildOptions(), tagger=spacy_tagger)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "ds.keys"]  # no temp folders left


def test_build_errors_leave_nothing(tmp_path, spacy_tagger):
    with pytest.raises(BuildError, match="split 'train'"):
        build_dataset([rec("The man opens the door.", split="val")], tmp_path / "x", tagger=spacy_tagger)
    with pytest.raises(BuildError, match="clash"):
        build_dataset([rec("The man opens the door.")], tmp_path / "x", tagger=spacy_tagger,
                      label_fn=lambda q: {"answer": "x"})
    with pytest.raises(BuildError, match="blind"):
        build_dataset([rec("The man opens the door.")], tmp_path / "x",
                      BuildOptions(blind=("test",)), tagger=spacy_tagger)
    assert list(tmp_path.iterdir()) == []


def test_vocab_file_and_overwrite(tmp_path, spacy_tagger):
    vf = tmp_path / "vocab.txt"
    vf.write_text("DOOR\n")
    out = tmp_path / "ds"
    build_dataset([rec("The man opens the door.")], out, BuildOptions(vocab=VocabSpec(file=str(vf))),
                  tagger=spacy_tagger)
    assert pq.read_table(out / "data" / "train.parquet").column("answer").to_pylist() == ["door"]
    build_dataset([rec("The man opens the door.")], out,
                  BuildOptions(vocab=VocabSpec(unlimited=True), overwrite=True), tagger=spacy_tagger)
    assert pq.read_table(out / "data" / "train.parquet").num_rows == 3


def test_split_by_movie_keeps_movies_whole():
    records = [rec(f"s{i}", clip=f"{1000 + m:04d}_M{m}_00.00.0{i}.000-00.00.0{i}.500")
               for m in range(20) for i in range(3)]
    out = split_by_movie(records, {"train": 0.6, "val": 0.2, "test": 0.2})
    by_movie = {}
    for r in out:
        by_movie.setdefault(r.movie, set()).add(r.split)
    assert all(len(s) == 1 for s in by_movie.values())
    sizes = {s: sum(1 for r in out if r.split == s) for s in ("train", "val", "test")}
    assert sizes == {"train": 36, "val": 12, "test": 12}
    assert split_by_movie(records, {"train": 0.6, "val": 0.2, "test": 0.2}) == out
    with pytest.raises(ValueError):
        split_by_movie(records, {"train": -1})


def test_generic_jsonl_tsv_and_policy(tmp_path):
    j = tmp_path / "c.jsonl"
    j.write_text('{"video": "v1", "start": 1, "end": 3.5, "sentence": " A man  runs. ", "split": "train", '
                 '"question_type": "action"}\n\n'
                 '{"video": "v1", "start": 4, "end": 4, "sentence": "Bad.", "split": "train"}\n')
    with pytest.raises(FormatError, match=r"c.jsonl:3: start 4.0 is not before end 4.0"):
        read_generic(j)
    got = read_generic(j, errors="skip")
    assert len(got.records) == 1 and got.problems[0].line == 3 and got.problems[0].kind == "start_after_end"
    r = got.records[0]
    assert r.clip_id == "v1_00.00.01.000-00.00.03.500" and r.movie == "v1" and r.sentence == "A man runs."
    assert r.labels == (("question_type", "action"),)
    t = tmp_path / "c.tsv"
    t.write_text("video\tstart\tend\tsentence\tsplit\nv2\t0\t2\tA dog barks.\tval\nv2\t0\t2\n")
    with pytest.raises(FormatError, match=r"c.tsv:3: expected 5 tab-separated columns, found 3"):
        read_generic(t)
    assert read_generic(t, errors="skip").records[0].split == "val"
    (tmp_path / "h.tsv").write_text("video\tsentence\n")
    with pytest.raises(FormatError, match="header lacks"):
        read_generic(tmp_path / "h.tsv")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(FormatError, match=".jsonl or .tsv"):
        read_generic(tmp_path / "c.txt")
    with pytest.raises(ValueError, match="empty sentence"):
        generic_record("v", 0, 1, "  ", "train")


def test_activitynet_synthetic_policy(tmp_path):
    f = tmp_path / "anet.json"
    f.write_text(json.dumps({"v_a": {"duration": 10.0, "timestamps": [[0, 5], [6, 6], [8, 10.0004], [9, 12]],
                                     "sentences": ["A man runs.", "Bad.", "Rounding is fine.", "Too long."]}}))
    with pytest.raises(FormatError, match="video v_a segment 1: start 6.0 is not before end 6.0"):
        read_activitynet(f)
    got = read_activitynet(f, "val", errors="skip")
    assert [r.sentence for r in got.records] == ["A man runs.", "Rounding is fine."]
    assert [p.kind for p in got.problems] == ["start_after_end", "end_past_duration"]
    assert all(r.split == "val" for r in got.records)


def test_activitynet_real_file(shared_dir):
    f = shared_dir / "data" / "captions" / "activitynet_captions_train.json"
    with pytest.raises(FormatError, match="activitynet_captions_train.json: video .* segment"):
        read_activitynet(f)
    got = read_activitynet(f, errors="skip")
    kinds = {}
    for p in got.problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    assert len(got.records) + len(got.problems) == 37421
    assert kinds == {"start_after_end": 4, "end_past_duration": 29}


def test_import_keeps_every_row(tmp_path, spacy_tagger):
    rows = [
        "\t".join([CLIP, "00.01.00.000", "00.01.02.000", "00.01.00.000", "00.01.02.000", s, q, a])
        for s, q, a in [
            ("someone hovers over her", "someone hovers _____ her", "over"),
            ("someone hovers over her", "someone hovers _____ her", "over"),       # exact duplicate
            ("someone hovers over her", "someone h_____s over her", "over"),       # blank inside a word
            ("he looks at the man", "he looks at the _____", "man"),
        ]
    ]
    f = tmp_path / "LSMDC16_annos_test_FIB.csv"
    f.write_text("\n".join(rows) + "\n")
    loaded = read_fib_import(f)
    assert [w.kind for w in loaded.warnings] == ["blank_inside_word"]
    rep = import_dataset(loaded.records, tmp_path / "imp", tagger=spacy_tagger, warnings=loaded.warnings)
    t = pq.read_table(tmp_path / "imp" / "data" / "test.parquet").to_pylist()
    assert [r["question_id"] for r in t] == ["test-0", "test-1", "test-2", "test-3"]
    assert [r["word_index"] for r in t] == [2, 2, 1, 4]
    assert [(r["char_start"], r["char_end"]) for r in t][3] == (16, 19)
    assert t[3]["answer_pos"] == "NN"
    assert rep.stats["input_warnings"]["counts"] == {"blank_inside_word": 1}


def test_import_real_val(tmp_path, shared_dir, spacy_tagger):
    f = shared_dir / "data" / "moviefib_val" / "LSMDC16_annos_val_FIB.csv"
    loaded = read_fib_import(f)
    import_dataset(loaded.records, tmp_path / "val", tagger=spacy_tagger)
    t = pq.read_table(tmp_path / "val" / "data" / "val.parquet")
    assert t.num_rows == 17568
    ids = t.column("question_id").to_pylist()
    assert ids[0] == "val-0" and ids[-1] == "val-17567"
    r = t.slice(0, 1).to_pylist()[0]
    assert r["sentence"][r["char_start"]:r["char_end"]] == r["answer"]


def test_cli_build_descriptions(tmp_path, tiny_descriptions, capsys):
    out = tmp_path / "cli"
    rc = main(["build", "descriptions", "-o", str(out), f"train={tiny_descriptions}", "--processes", "1",
               "--no-progress", "--split-by-movie", "train=0.5,val=0.25,test=0.25", "--blind", "test",
               "--mode", "compat", "--top-k", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and "[blind]" in printed
    assert (out / "data" / "train.parquet").is_file() and (tmp_path / "cli.keys" / "test.parquet").is_file()
    assert json.loads((out / "stats.json").read_text())["mode"] == "compat"
    # errors are one line with an exit status, never a traceback
    rc = main(["build", "descriptions", "-o", str(out), str(tiny_descriptions), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3 and "exists" in err and "Traceback" not in err
    rc = main(["build", "descriptions", "-o", str(tmp_path / "x"), str(tmp_path / "missing.csv")])
    assert rc == 3 and "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{CLIP}\t00.01.00.000\t00.01.02.000\t00.01.00.000\n")
    rc = main(["build", "descriptions", "-o", str(tmp_path / "y"), str(bad), "--no-progress"])
    assert rc == 3 and "bad.csv:1: expected 6 tab-separated columns" in capsys.readouterr().err
    rc = main(["build", "descriptions", "-o", str(tmp_path / "z"), f"train={tiny_descriptions}",
               "--split-by-movie", "train=x"])
    assert rc == 2
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_cli_corpus_and_import(tmp_path, capsys):
    j = tmp_path / "c.jsonl"
    j.write_text("".join(json.dumps({"video": f"v{i}", "start": 0, "end": 2, "sentence": s, "split": sp}) + "\n"
                         for i, (s, sp) in enumerate([("A man opens the red door.", "train"),
                                                      ("A woman closes the door.", "test")])))
    assert main(["build", "corpus", "-o", str(tmp_path / "c"), str(j), "-j", "1", "--no-progress"]) == 0
    assert pq.read_table(tmp_path / "c" / "data" / "test.parquet").num_rows >= 1
    assert main(["build", "corpus", "-o", str(tmp_path / "d"), "--no-progress"]) == 2
    assert main(["build"]) == 2
    assert "descriptions" in capsys.readouterr().err


def test_parallel_tagging_matches_single_process(spacy_tagger, tiny_descriptions):
    from moviefib.questions import from_descriptions
    from moviefib.questions.tagging import Tagger

    sentences = [r.sentence for r in from_descriptions(tiny_descriptions).records] * 3
    two = Tagger(n_process=2, chunk_size=25)
    calls = []
    assert list(two.tag(sentences, progress=calls.append)) == list(spacy_tagger.tag(sentences))
    assert sum(calls) == len(sentences) and len(calls) > 2


def test_missing_model(tmp_path, tiny_descriptions, capsys):
    from moviefib.questions.tagging import Tagger, TaggerUnavailable

    with pytest.raises(TaggerUnavailable, match="no_such_model"):
        Tagger("no_such_model")
    rc = main(["build", "descriptions", "-o", str(tmp_path / "m"), f"train={tiny_descriptions}",
               "--model", "no_such_model", "--no-progress"])
    assert rc == 5 and "no_such_model" in capsys.readouterr().err


def _official_row(clip_start: str, clip_end: str, sentence: str, fill_in: str, blank: str) -> str:
    clip = f"1010_TITANIC_{clip_start}-{clip_end}"
    return "\t".join([clip, clip_start, clip_end, clip_start, clip_end, sentence, fill_in, blank])


OFFICIAL_ROWS = [
    # quotes and punctuation, kept as written
    ("00.10.00.000", "00.10.02.500", 'He says, "Hello, Rose."', 'He says, "Hello, _____."', "Rose"),
    # no blank at all: the row FrozenBiLM drops; kept and scored
    ("00.10.03.000", "00.10.05.000", "SOMEONE stares.", "SOMEONE stares.", "stares"),
    # a blank inside a word (string-split blanking of the release)
    ("00.10.06.000", "00.10.08.000", "someone hovers over her", "someone h_____s over her", "over"),
    # a truncated FILL_IN (a repeated word cut the sentence)
    ("00.10.09.000", "00.10.11.000", "he looks at him and looks away", "he _____ at him and", "looks"),
    ("00.10.12.000", "00.10.14.000", "Rose smiles; Jack's hat falls!", "Rose smiles; Jack's _____ falls!", "hat"),
]


def test_official_file_imports_whole_and_scores_every_row(tmp_path, capsys):
    from moviefib.evaluate import evaluate, write_submission

    f = tmp_path / "LSMDC16_annos_val_FIB.csv"
    f.write_text("".join(_official_row(*r) + "\n" for r in OFFICIAL_ROWS), encoding="utf-8")
    out = tmp_path / "ds"
    assert main(["build", "import", "-o", str(out), str(f), "-j", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "kept quirks: blank_inside_word 1, no_blank 1, truncated_fill_in 1" in err
    t = pq.read_table(out / "data" / "val.parquet").to_pylist()
    assert [r["question_id"] for r in t] == [f"val-{i}" for i in range(5)]
    assert [r["question"] for r in t] == [r[3] for r in OFFICIAL_ROWS]  # as written, quotes included
    assert t[0]["sentence"][t[0]["char_start"]:t[0]["char_end"]] == "Rose"
    assert (t[1]["word_index"], t[1]["char_start"], t[1]["char_end"], t[1]["answer_pos"]) == (-1, -1, -1, "")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_warnings"]["counts"] == {"blank_inside_word": 1, "no_blank": 1, "truncated_fill_in": 1}
    # The evaluator scores the no-blank row like any other: all-rows scores count it.
    answers = {r["question_id"]: r["answer"] for r in t}
    answers["val-1"] = "walks"
    ev = evaluate(out, write_submission(tmp_path / "s.tsv", answers), bootstrap=0)
    assert (ev.n_questions, ev.submissions[0].summary.correct) == (5, 4)
    from moviefib.dataset import QuestionView, read_table

    item = QuestionView(read_table(out, "val"), {"stares": 0})[1]
    assert item.left == ("SOMEONE", "stares.") and item.right == () and item.answer_index == 0


def test_import_two_files_for_one_split_refused(tmp_path, capsys, spacy_tagger):
    a, b = tmp_path / "a_FIB.csv", tmp_path / "b_FIB.csv"
    a.write_text(_official_row(*OFFICIAL_ROWS[0]) + "\n", encoding="utf-8")
    b.write_text(_official_row(*OFFICIAL_ROWS[4]) + "\n", encoding="utf-8")
    rc = main(["build", "import", "-o", str(tmp_path / "x"), f"train={a}", f"train={b}", "-j", "1",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3 and "split 'train' is given by two files" in err and str(a) in err and str(b) in err
    assert not (tmp_path / "x").exists()
    # one split per file is fine, and the ids stay unique
    assert main(["build", "import", "-o", str(tmp_path / "y"), f"train={a}", f"val={b}", "-j", "1",
                 "--no-progress"]) == 0
    ids = [pq.read_table(tmp_path / "y" / "data" / f"{s}.parquet").column("question_id").to_pylist()
           for s in ("train", "val")]
    assert ids == [["train-0"], ["val-0"]]


def test_sentence_over_tagger_limit_is_our_error(tmp_path, capsys, spacy_tagger):
    long = "word " * (spacy_tagger.max_length // 5 + 1)
    j = tmp_path / "c.jsonl"
    j.write_text(json.dumps({"video": "v", "start": 0, "end": 1, "sentence": long, "split": "train"}) + "\n")
    rc = main(["build", "corpus", "-o", str(tmp_path / "c"), str(j), "-j", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3 and f"{j}:1: sentence of" in err and "E088" not in err
    assert f"limit of {spacy_tagger.max_length}" in err and len(err.strip().splitlines()) == 1


def test_write_failure_is_one_build_error(tmp_path, spacy_tagger):
    # /sys refuses new entries even to root, where permission bits would not.
    with pytest.raises(BuildError, match="cannot write /sys/moviefib-test"):
        build_dataset([rec("The man opens the door.")], "/sys/moviefib-test", tagger=spacy_tagger)


class _NoTagging:
    """A tagger that must not be reached: the options are refused first."""

    max_length = 10_000
    info = {}

    def tag(self, sentences, progress=None):
        raise AssertionError("tagged before the options were checked")


def test_unknown_blind_split_is_refused_before_tagging(tmp_path):
    with pytest.raises(BuildError, match="blind split\\(s\\) nope not among the splits \\(train\\)"):
        build_dataset([rec("The man opens the door.")], tmp_path / "out", BuildOptions(blind=("nope",)),
                      tagger=_NoTagging())
    assert not (tmp_path / "out").exists()
