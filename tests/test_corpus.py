"""The demo corpus generator: LSMDC layout, determinism, decodable clips, word types that match the video."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace as types_ns

import numpy as np
import pytest

from moviefib.cli import main
from moviefib.demo.corpus import (
    ANNOTATION_FILE,
    MANIFEST_FILE,
    SPLITS,
    WORD_TYPES_FILE,
    CorpusConfig,
    CorpusError,
    generate_corpus,
    plan_corpus,
    question_type_labels,
    read_word_types,
)
from moviefib.demo.grammar import (
    ACTIONS,
    BACKDROPS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    SIZES,
    SPEEDS,
    SceneWords,
    describe,
    draw_scene_words,
)
from moviefib.demo.scenes import layout_scene, render, render_background
from moviefib.formats import ClipId, read_descriptions

av = pytest.importorskip("av")

TINY = CorpusConfig(seed=7, movies=3, clips_per_movie=3, frame_size=64, second_sentence_rate=0.5)
VOCAB = {"colour": COLOURS, "extra_colour": COLOURS, "shape": SHAPES, "extra_shape": SHAPES,
         "size": SIZES, "backdrop": BACKDROPS, "action": ACTIONS, "speed": SPEEDS, "direction": DIRECTIONS}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "c"
    info = generate_corpus(out, TINY)
    return out, info


def test_same_seed_gives_byte_identical_files_with_any_worker_count(corpus, tmp_path):
    out, info = corpus
    again = generate_corpus(tmp_path / "again", TINY, workers=2)
    first, second = _files(out), _files(tmp_path / "again")
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert sum(name.endswith(".avi") for name in first) == 9
    assert again.clips == info.clips and again.written == 9


def test_another_seed_gives_other_clips_and_sentences(corpus, tmp_path):
    out, _ = corpus
    generate_corpus(tmp_path / "other", CorpusConfig(**{**TINY.__dict__, "seed": 8}))
    assert (tmp_path / "other" / WORD_TYPES_FILE).read_text() != (out / WORD_TYPES_FILE).read_text()
    clips = lambda root: {p.name: p.read_bytes() for p in root.rglob("*.avi")}  # noqa: E731
    a, b = clips(out), clips(tmp_path / "other")
    assert not set(a.values()) & set(b.values())


def test_annotation_files_pass_the_strict_reader(corpus):
    out, info = corpus
    movies_of = {}
    for split in SPLITS:
        rows = read_descriptions(out / ANNOTATION_FILE.format(split=split), errors="strict").rows
        assert len(rows) == info.sentences[split]
        assert len({r.clip_id for r in rows}) == info.clips[split]
        movies_of[split] = {r.movie for r in rows}
        for r in rows:
            clip = ClipId.parse(r.clip_id)
            assert (clip.start, clip.end) == (r.start_aligned, r.end_aligned)
            assert r.end_extracted - r.start_extracted >= 2.0 - 1e-9
            assert r.start_extracted <= r.start_aligned and r.end_aligned <= r.end_extracted
            if r.end_aligned - r.start_aligned < 2.0:  # padded symmetrically to exactly 2 s
                assert r.end_extracted - r.start_extracted == pytest.approx(2.0, abs=1e-6)
                assert (r.start_aligned - r.start_extracted) == pytest.approx(r.end_extracted - r.end_aligned)
            assert clip.video_path(out).is_file()
    assert not (movies_of["training"] & movies_of["val"] or movies_of["training"] & movies_of["test"]
                or movies_of["val"] & movies_of["test"])
    # Some clip carries two sentences (rate 0.5): clip ids are not unique, as in LSMDC.
    assert sum(info.sentences.values()) > sum(info.clips.values())


def test_clips_decode_to_the_expected_frames_and_show_the_described_colour(corpus):
    out, _ = corpus
    plans = {p.clip_id: p for p in plan_corpus(TINY)}
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    for clip_id, plan in plans.items():
        path = plan.video_path(out)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert container.format.name == "avi" and stream.codec_context.name == "mpeg4"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        expected = round((plan.end_extracted - plan.start_extracted) * TINY.fps)
        assert len(frames) == expected == plan.scene.num_frames, clip_id
        assert frames[0].shape == (TINY.frame_size, TINY.frame_size, 3)
        # The moving object is what differs from the still background; its colour survives the codec.
        video = np.stack(frames).astype(np.float32)
        diff = np.abs(video - render_background(plan.scene)).sum(axis=3)
        pixels = video[diff > 120]
        assert len(pixels) > 20 * len(frames), clip_id
        nearest = np.argmin(((palette - np.median(pixels, axis=0)) ** 2).sum(axis=1))
        assert list(COLOURS)[nearest] == plan.scene.words.colour, clip_id


def test_word_types_match_the_sentences_and_the_scenes(corpus):
    out, _ = corpus
    types = read_word_types(out)
    plans = {p.clip_id: p for p in plan_corpus(TINY)}
    rows = [r for split in SPLITS for r in read_descriptions(out / ANNOTATION_FILE.format(split=split))]
    assert set(types) == {(r.clip_id, r.sentence) for r in rows} and len(types) == len(rows)
    lines = (out / WORD_TYPES_FILE).read_text().splitlines()
    assert [(json.loads(line)["clip_id"], json.loads(line)["sentence"]) for line in lines] == \
        [(r.clip_id, r.sentence) for r in rows]
    seen = collections.Counter()
    for (clip_id, sentence), entry in types.items():
        words = sentence.split()
        assert len(entry.types) == len(entry.roles) == len(words)
        scene = plans[clip_id].scene.words
        for word, kind, role in zip(words, entry.types, entry.roles):
            seen[kind] += 1
            word = word.strip(".,")
            if not role:
                assert kind == "text" and word.lower() not in COLOURS and word not in SHAPES
                continue
            assert kind == ("motion" if role in ("action", "speed", "direction") else "appearance")
            assert word in VOCAB[role]
            truth = {"extra_colour": scene.extra and scene.extra[0],
                     "extra_shape": scene.extra and scene.extra[1]}.get(role) or getattr(scene, role)
            assert word == truth, (clip_id, role)
    assert seen["text"] and seen["appearance"] and seen["motion"]
    # The builder's label_fn: a question (record + word index) gets its word's type.
    label = question_type_labels(out)
    (clip_id, sentence), entry = next(iter(types.items()))
    record = types_ns(clip_id=clip_id, sentence=sentence)
    for i, kind in enumerate(entry.types):
        assert label(types_ns(record=record, word_index=i)) == {"question_type": kind}
    with pytest.raises(CorpusError, match="no word types for clip"):
        label(types_ns(record=types_ns(clip_id=clip_id, sentence="Another sentence."), word_index=0))


def _track(frames: list[np.ndarray], background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centres, areas = [], []
    for f in frames:
        mask = np.abs(f.astype(np.float32) - background).sum(axis=2) > 60
        ys, xs = np.nonzero(mask)
        centres.append((xs.mean(), ys.mean()))
        areas.append(mask.sum())
    return np.array(centres), np.array(areas)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_rendered_motion_follows_direction_speed_and_action(direction):
    travelled = {}
    for speed in SPEEDS:
        for action in ("glides", "grows", "shrinks"):
            words = SceneWords(colour="yellow", shape="box", size="small", action=action, speed=speed,
                               direction=direction, backdrop="door")
            scene = layout_scene(words, np.random.default_rng(0), width=96, height=96, fps=16,
                                 num_frames=32, palette=((60, 60, 70), (20, 20, 30)), texture_seed=1)
            centres, areas = _track(list(render(scene)), render_background(scene))
            move = centres[-1] - centres[0]
            assert np.dot(move, DIRECTIONS[direction]) > 0.8 * np.linalg.norm(move)
            if action == "grows":
                assert areas[-1] > 2 * areas[0]
            elif action == "shrinks":
                assert areas[0] > 2 * areas[-1]
            else:
                travelled[speed] = np.linalg.norm(move)
    assert travelled["quickly"] > 2 * travelled["slowly"]


def test_visual_words_are_unpredictable_from_text_and_text_words_predictable():
    """A context model (two words either side of a blank) trained on many sentences fills the text
    words but is near chance on visual words, because the templates never depend on the scene."""
    rng = np.random.default_rng(0)
    sentences = [describe(draw_scene_words(rng), rng) for _ in range(3000)]
    # Prepositions and conjunctions are never blanked by the builder (not N/V/J/R).
    function_words = {"someone", "toward", "towards", "past", "near", "beside", "while", "with", "that"}

    def contexts(sentence):
        words = ["<s>"] * 2 + [w.lower().strip(".,") for w in sentence.text.split()] + ["</s>"] * 2
        for i, kind in enumerate(sentence.types, start=2):
            if kind != "text" or (len(words[i]) > 3 and words[i] not in function_words):
                yield (tuple(words[i - 2:i]), tuple(words[i + 1:i + 3])), words[i], kind

    table = collections.defaultdict(collections.Counter)
    for s in sentences[:2500]:
        for ctx, word, _ in contexts(s):
            table[ctx][word] += 1
    right, total = collections.Counter(), collections.Counter()
    for s in sentences[2500:]:
        for ctx, word, kind in contexts(s):
            guess = table[ctx].most_common(1)[0][0] if table[ctx] else None
            right[kind] += guess == word
            total[kind] += 1
    accuracy = {k: right[k] / total[k] for k in total}
    assert min(total.values()) > 1000
    assert accuracy["text"] > 0.8, accuracy
    # Chance is about 0.2 (appearance) and 0.3 (motion): uniform over 2..8 values per attribute.
    assert accuracy["appearance"] < 0.3 and accuracy["motion"] < 0.35, accuracy


def test_rerun_completes_an_interrupted_corpus_and_reuses_a_complete_one(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    info = generate_corpus(copy, TINY)
    assert info.reused and info.written == 0
    # Interrupted: the manifest says unfinished, one clip and the annotation files are missing.
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "complete": False}))
    victim = next(copy.rglob("*.avi"))
    victim.unlink()
    (victim.parent / f".{victim.name}.abc.tmp").write_bytes(b"half")
    (copy / ANNOTATION_FILE.format(split="val")).unlink()
    info = generate_corpus(copy, TINY)
    assert not info.reused and info.written == 1
    assert _files(copy) == _files(out)


def test_refuses_other_settings_and_foreign_folders(corpus, tmp_path):
    out, _ = corpus
    with pytest.raises(CorpusError, match="seed"):
        generate_corpus(out, CorpusConfig(**{**TINY.__dict__, "seed": 1}))
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(CorpusError, match="not empty"):
        generate_corpus(tmp_path, TINY)
    with pytest.raises(CorpusError, match="not a folder"):
        generate_corpus(tmp_path / "mine.txt", TINY)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad,match", [
    ({"movies": 2}, "movies"), ({"clips_per_movie": 0}, "clips_per_movie"), ({"frame_size": 63}, "frame_size"),
    ({"min_seconds": 3.0, "max_seconds": 2.0}, "min_seconds")])
def test_bad_settings_are_refused(bad, match):
    with pytest.raises(CorpusError, match=match):
        CorpusConfig(**bad)


def test_read_word_types_names_the_bad_line(tmp_path):
    path = tmp_path / WORD_TYPES_FILE
    good = {"split": "val", "clip_id": "9001_A_00.00.01.000-00.00.03.000", "sentence": "A red ball.",
            "types": ["text", "appearance", "appearance"], "roles": ["", "colour", "shape"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "types": ["text"]}) + "\n")
    with pytest.raises(CorpusError, match=r"word_types.jsonl:2: 1 types"):
        read_word_types(path)
    path.write_text(json.dumps({**good, "types": ["text", "colour", "shape"]}) + "\n")
    with pytest.raises(CorpusError, match=r":1: unknown word type"):
        read_word_types(path)
    path.write_text("{not json\n")
    with pytest.raises(CorpusError, match=r":1: malformed"):
        read_word_types(path)


def test_cli_writes_a_corpus_and_reports_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["demo", "corpus", "--out", str(out), "--size", "tiny", "--frame-size", "48", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "12 clips written" in printed and "LSMDC16_annos_training.csv" in printed
    assert read_descriptions(out / ANNOTATION_FILE.format(split="test")).rows
    assert main(args) == 0 and "reused" in capsys.readouterr().out
    assert main(args[:-1] + ["--seed", "5", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings (seed)" in err
    assert main(["demo", "corpus", "--out", str(tmp_path / "x"), "--movies", "2", "--no-progress"]) == 2
    assert "movies must be at least 3" in capsys.readouterr().err


# The descriptions of the default corpus (seed 0), as of generator version 1: a change of the grammar or
# of the order of its random draws changes them, and GENERATOR_VERSION must then be bumped.
DEFAULT_SENTENCES_SHA256 = "fc29398f58a5666ae304b8d2963e4d6ad755cedab85844e286083f33074f111a"


def test_the_default_corpus_describes_its_clips_as_it_always_did():
    plans = plan_corpus(CorpusConfig(seed=0))
    digest = hashlib.sha256()
    for p in plans:
        for s in p.sentences:
            digest.update(json.dumps([p.clip_id, s.text, s.types, s.roles]).encode() + b"\n")
    assert plans[0].sentences[0].text == ("SOMEONE and SOMEONE watch as a large white ring slowly bounces to the "
                                          "left in front of the tree.")
    assert digest.hexdigest() == DEFAULT_SENTENCES_SHA256
