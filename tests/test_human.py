"""The human-answer web page: protocol, answer file, server guards, and end to end in headless Chromium."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the human page needs Flask (pip install 'moviefib[human]')")

from moviefib.cli import main as cli_main
from moviefib.human.answers import FIELDS, AnswerFileError, InvalidInput, clean_answer, read_answers
from moviefib.human.protocol import AnnotationSession, Conflict, Progress
from moviefib.human.questions import HumanQuestion, QuestionError, load_questions, sample_questions
from moviefib.human.server import ServerOptions, create_app

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

# Two blanks per sentence, two sentences per clip, three movies: the protocol has something to refuse.
SENTENCES = [
    ("Someone opens the red door slowly.", ("opens", "door")),
    ("She smiles at the old man.", ("smiles", "man")),
    ("A car speeds down the empty road.", ("car", "road")),
    ("He drinks a cup of coffee.", ("drinks", "coffee")),
    ("The girl throws the ball high.", ("girl", "ball")),
    ("Rain falls on the dark city.", ("falls", "city")),
]
MOVIES = ("1001_ALPHA_MOVIE", "1002_BETA", "3003_GAMMA_FILM")


def _clip_id(movie: str, k: int) -> str:
    return f"{movie}_00.0{k}.01.000-00.0{k}.03.500"


def write_dataset(folder: Path, split: str = "val") -> Path:
    """A dataset folder in the moviefib.schema layout, with 12 questions of 6 sentences on 3 clips."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moviefib.formats import BLANK
    from moviefib.schema import arrow_schema

    rows = []
    for s, (sentence, words) in enumerate(SENTENCES):
        movie = MOVIES[s // 2]
        clip = _clip_id(movie, s % 2)
        for word in words:
            start = sentence.index(word)
            rows.append(dict(
                question_id=f"q{len(rows):02d}", clip_id=clip, movie=movie, sentence_id=f"s{s}",
                start_aligned=1.0, end_aligned=3.5, start_extracted=1.0, end_extracted=3.5,
                sentence=sentence, question=sentence[:start] + BLANK + sentence[start + len(word):],
                answer=word, answer_pos="NN", word_index=len(sentence[:start].split()),
                char_start=start, char_end=start + len(word)))
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), folder / "data" / f"{split}.parquet")
    return folder


def write_avi(path: Path, frames: int = 30, shade: int = 0) -> Path:
    """A tiny moving-square AVI (MPEG-4 part 2, as LSMDC clips are AVI) at 12 fps."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            img = np.full((64, 96, 3), shade, dtype=np.uint8)
            img[20:44, 3 * i:3 * i + 24] = (255, 200, 0)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def clip_path(root: Path, s: int) -> Path:
    movie = MOVIES[s // 2]
    return root / movie / f"{_clip_id(movie, s % 2)}.avi"


def write_clips(root: Path) -> None:
    """A whole clip (2.5 s, as long as its id and extracted times say) for every clip of the dataset."""
    for s in range(len(SENTENCES)):
        if not clip_path(root, s).exists():
            write_avi(clip_path(root, s), shade=40 * s)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("human") / "tiny")


# Named apart from its fixture name so that test_bad_inputs_human can import it without shadowing.
@pytest.fixture(scope="module", name="video_root")
def video_root_fixture(tmp_path_factory) -> Path:
    """The clips of the dataset's questions (:func:`write_clips`)."""
    pytest.importorskip("av", reason="video mode needs PyAV")
    root = tmp_path_factory.mktemp("videos")
    write_clips(root)
    return root


def _questions(n: int = 40) -> list[HumanQuestion]:
    """In-memory questions, two per sentence."""
    return [HumanQuestion(f"q{i}", f"clip{i // 4}", f"s{i // 2}", f"word{i} is ", " here.") for i in range(n)]


# --- questions, validation, protocol, answer file ---------------------------------------------------------

def test_questions_order_and_sample_are_seeded_and_one_per_sentence(dataset):
    qs = load_questions(dataset, "val")
    assert sorted(q.question_id for q in qs) == [f"q{i:02d}" for i in range(12)]
    assert [q.question_id for q in load_questions(dataset, "val", seed=0)] == [q.question_id for q in qs]
    assert [q.question_id for q in load_questions(dataset, "val", seed=1)] != [q.question_id for q in qs]
    q = next(q for q in qs if q.question_id == "q00")
    assert (q.before, q.after) == ("Someone ", " the red door slowly.")
    sample = sample_questions(load_questions(dataset, "val", seed=3), 6)
    assert len({q.sentence_id for q in sample}) == 6
    with pytest.raises(QuestionError, match="6 sentences"):
        sample_questions(qs, 7)


@pytest.mark.parametrize("text, message", [
    ("", "Type the missing word"), ("   ", "Type the missing word"), ("two words", "One word only"),
    ("x" * 33, "Too long"), ("<b>", "Letters and digits"), ("door;", "Letters and digits"),
    ("--", "Letters and digits"), (None, "must be text"),
])
def test_bad_answers_are_refused_with_a_message(text, message):
    with pytest.raises(InvalidInput, match=message):
        clean_answer(text)


def test_good_answers_are_kept_as_typed():
    assert [clean_answer(t) for t in (" Door ", "don't", "t-shirt", "café", "2")] == \
        ["Door", "don't", "t-shirt", "café", "2"]


def test_protocol_one_blank_per_sentence_and_no_text_after_video(tmp_path):
    qs = _questions()
    answers = tmp_path / "answers.jsonl"
    video = AnnotationSession(qs, "video", answers)
    assert video.next_question("ann")[0].question_id == "q0"
    video.submit("ann", "q0", "word", 1.5, False)
    with pytest.raises(Conflict, match="already answered"):
        video.submit("ann", "q0", "word", 1.0, False)
    with pytest.raises(Conflict, match="another blank"):
        video.submit("ann", "q1", "word", 1.0, False)  # q1 is the other blank of q0's sentence
    assert video.next_question("ann")[0].question_id == "q2"
    assert video.next_question("other")[0].question_id == "q0"  # per annotator

    text = AnnotationSession(qs, "text", answers)
    with pytest.raises(Conflict, match="with its video"):
        text.submit("ann", "q0", "word", 1.0, False)
    q, progress = text.next_question("ann")
    assert q.question_id == "q2" and progress.done == 0 and progress.remaining == 19
    text.submit("ann", "q2", None, 3.0, True)  # a skip counts as seen
    # ... so in video mode the same question may follow (text first, then video: the paper's order)
    video2 = AnnotationSession(qs, "video", answers)
    assert video2.next_question("ann")[0].question_id == "q2"
    q, progress = video2.next_question("ann")
    assert progress.done == 1 and progress.remaining == 19


def test_another_sample_still_closes_the_sentence(tmp_path):
    qs = _questions()
    answers = tmp_path / "answers.jsonl"
    # sample A serves q0 (sentence s0); sample B serves q1, the other blank of s0
    AnnotationSession([qs[0], qs[2]], "text", answers, split_questions=qs).submit("ann", "q0", "w", 1.0, False)
    b = AnnotationSession([qs[1], qs[3]], "text", answers, split_questions=qs)
    q, progress = b.next_question("ann")
    assert q.question_id == "q3" and progress == Progress(done=0, remaining=1)
    with pytest.raises(Conflict, match="another blank"):
        b.submit("ann", "q1", "w", 1.0, False)
    # without the split, the record is about an unknown question and cannot close anything
    assert AnnotationSession([qs[1]], "text", answers).next_question("ann")[0].question_id == "q1"


def test_a_built_dataset_is_served(tiny_dataset, tmp_path):
    """The builder's real output (tests/conftest.py), not only the hand-made table above."""
    from moviefib.dataset import read_table
    from moviefib.human.server import make_app

    client = make_app(tiny_dataset, "val", "text", tmp_path / "a.jsonl", sample=5, seed=1).test_client()
    body = client.get("/api/next?annotator=ann").json
    assert body["progress"] == {"done": 0, "remaining": 5}
    row = next(r for r in read_table(tiny_dataset, "val").to_pylist()
               if r["question_id"] == body["question"]["question_id"])
    q = body["question"]
    assert q["before"] + "_____" + q["after"] == row["question"] and "answer" not in q


def test_two_servers_on_one_file_see_each_other(tmp_path):
    qs = _questions()
    a = AnnotationSession(qs, "text", tmp_path / "a.jsonl")
    b = AnnotationSession(qs, "text", tmp_path / "a.jsonl")
    a.submit("ann", "q0", "first", 1.0, False)
    with pytest.raises(Conflict):
        b.submit("ann", "q0", "again", 1.0, False)  # b reads a's append under the lock first
    assert b.next_question("ann")[0].question_id == "q2"


_WRITER = """
import sys
from moviefib.human.protocol import AnnotationSession
from moviefib.human.questions import HumanQuestion
qs = [HumanQuestion(f"q{i}", "c", f"s{i}", "x ", " y") for i in range(int(sys.argv[3]))]
session = AnnotationSession(qs, "text", sys.argv[1])
for q in qs:
    session.submit(sys.argv[2], q.question_id, "word" * 7, 0.25, False)
"""


def test_concurrent_writers_never_corrupt_the_file(tmp_path):
    answers = tmp_path / "answers.jsonl"
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(answers), who, str(n)], cwd=ROOT)
             for who in ("ann", "bob", "cat")]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    records = read_answers(answers)
    assert len(records) == 3 * n
    for who in ("ann", "bob", "cat"):
        assert [r.question_id for r in records if r.annotator == who] == [f"q{i}" for i in range(n)]
    assert all(list(json.loads(line)) == list(FIELDS) for line in answers.read_text().splitlines())


def _record(qid: str = "q0", answer: str = "a") -> str:
    return json.dumps(dict(question_id=qid, answer=answer, mode="text", annotator="ann", seconds=1.0,
                           skipped=False))


def test_torn_last_line_is_cut_off_saved_beside_and_bad_lines_are_named(tmp_path, caplog):
    answers = tmp_path / "answers.jsonl"
    good = _record()
    answers.write_text(good + "\n" + good[:25])
    session = AnnotationSession(_questions(), "text", answers)
    assert "torn last line" in caplog.text
    assert answers.read_text() == good + "\n"
    # the cut bytes are kept beside the file, and the warning names where
    [saved] = tmp_path.glob("answers.jsonl.torn-*")
    assert saved.read_text() == good[:25] and saved.name in caplog.text
    session.submit("ann", "q2", "b", 1.0, False)
    assert [r.answer for r in read_answers(answers)] == ["a", "b"]

    answers.write_text(good + "\n" + good.replace('"text"', '"audio"') + "\n")
    with pytest.raises(AnswerFileError, match=r"answers.jsonl:2: mode must be one of"):
        AnnotationSession(_questions(), "text", answers)


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path, caplog):
    """Old code cut a last line without its newline even when it was a whole record: an answer lost."""
    answers = tmp_path / "answers.jsonl"
    answers.write_text(_record("q0", "a") + "\n" + _record("q2", "b"))
    assert [r.answer for r in read_answers(answers)] == ["a", "b"]  # the reader counts it too
    session = AnnotationSession(_questions(), "text", answers)
    assert answers.read_text() == _record("q0", "a") + "\n" + _record("q2", "b") + "\n"
    assert "added the missing newline" in caplog.text and not list(tmp_path.glob("*.torn-*"))
    with pytest.raises(Conflict, match="already answered"):  # q2's record counts as seen
        session.submit("ann", "q2", "again", 1.0, False)
    session.submit("ann", "q4", "c", 1.0, False)
    assert [r.answer for r in read_answers(answers)] == ["a", "b", "c"]
    assert AnnotationSession(_questions(), "text", answers).next_question("ann")[1].done == 3


def test_an_unterminated_last_line_that_is_a_bad_record_is_refused_not_cut(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(_record() + "\n" + _record("q2").replace('"text"', '"audio"'))
    with pytest.raises(AnswerFileError, match=r"answers.jsonl:2: mode must be one of"):
        AnnotationSession(_questions(), "text", answers)
    assert answers.read_text().endswith('"skipped": false}')  # left as it was


def test_the_evaluator_reads_the_file(tmp_path):
    evaluate_human = pytest.importorskip("moviefib.evaluate.human", reason="evaluator not installed")
    answers = tmp_path / "answers.jsonl"
    session = AnnotationSession(_questions(), "text", answers)
    session.submit("ann", "q0", "door", 2.5, False)
    session.submit("ann", "q2", None, 1.0, True)
    AnnotationSession(_questions(), "video", answers).submit("bob", "q0", "Door", 3.0, False)
    got = evaluate_human.read_human_answers(answers)
    assert [(a.question_id, a.answer, a.mode, a.annotator, a.skipped) for a in got] == [
        ("q0", "door", "text", "ann", False), ("q2", "", "text", "ann", True),
        ("q0", "Door", "video", "bob", False)]


@pytest.mark.slow
def test_real_videos_are_transcoded_muted_small_and_cached(tmp_path):
    av = pytest.importorskip("av", reason="needs PyAV")
    from moviefib.human.clips import MAX_HEIGHT, ClipCache, ClipError

    videos = ROOT.parent / "shared" / "videos"
    if not videos.is_dir():
        pytest.skip(f"{videos} is absent (real test videos)")
    cache = ClipCache(videos, tmp_path / "cache")
    # not LSMDC ids: the generic corpus rule finds <root>/<id>.<ext>
    assert cache.source("bigbuckbunny") == videos / "bigbuckbunny.mp4"
    out = cache.get("bigbuckbunny")  # 1280x720 h264 + aac, 25 fps, 5.3 s
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video"]  # muted: the audio track is dropped
        v = c.streams.video[0]
        assert v.codec_context.name == "vp9" and (v.width, v.height) == (640, MAX_HEIGHT)
        assert sum(1 for _ in c.decode(v)) == 132
    mtime = out.stat().st_mtime_ns
    assert cache.get("bigbuckbunny") == out and out.stat().st_mtime_ns == mtime  # cached, not redone
    with av.open(str(cache.get("cityCC0"))) as c:  # MPEG-2 PS whose stream starts at 0.54 s
        assert c.streams.video[0].height == MAX_HEIGHT and abs(c.duration / 1e6 - 7.6) < 0.3
    with pytest.raises(ClipError, match="no video file"):
        cache.get("1001_NOT_THERE_00.00.01.000-00.00.02.000")
    (tmp_path / "broken.avi").write_bytes(b"RIFF not a video")
    with pytest.raises(ClipError, match="broken.avi: cannot open"):
        ClipCache(tmp_path, tmp_path / "cache").get("broken")
    assert not list((tmp_path / "cache").glob(".*"))  # no temp file left behind


def _short_clip_session(dataset, video_root, tmp_path):
    """A video session over a copy of the clips where the first question's clip is cut short."""
    import shutil

    from moviefib.human.clips import ClipCache

    order = load_questions(dataset, "val")
    root = tmp_path / "videos"
    shutil.copytree(video_root, root)
    s = next(s for s in range(len(SENTENCES)) if clip_path(root, s).name == f"{order[0].clip_id}.avi")
    write_avi(clip_path(root, s), frames=10)  # 0.83 s of a 2.5 s clip
    session = AnnotationSession(order, "video", tmp_path / "answers.jsonl")
    return order, session, ClipCache(root, tmp_path / "cache")


def test_video_mode_never_serves_a_clip_cut_short(dataset, video_root, tmp_path):
    """Old code transcoded and served whatever part of the clip decoded."""
    order, session, clips = _short_clip_session(dataset, video_root, tmp_path)
    client = create_app(session, clips, ServerOptions()).test_client()
    bad = order[0]
    r = client.get(f"/clip/{bad.question_id}")
    assert r.status_code == 404 and bad.clip_id in r.json["error"]
    assert "decoded 0.83 s of the 2.50 s" in r.json["error"]
    body = client.get("/api/next?annotator=ann").json
    assert session.question(body["question"]["question_id"]).clip_id != bad.clip_id  # left out
    [notice] = body["notices"]
    assert bad.clip_id in notice and "cut short" in notice and "0.83 s" in notice
    # both questions of each sentence of that clip are gone from what remains to do
    dead = {x.sentence_id for x in order if x.clip_id == bad.clip_id}
    assert body["progress"]["remaining"] == len({x.sentence_id for x in order}) - len(dead)
    r = client.post("/api/answer", json=dict(annotator="ann", question_id=bad.question_id, answer="x",
                                             seconds=1.0, skipped=False))
    assert r.status_code == 409 and "not available" in r.json["error"]
    assert not clips.cache_path(bad.clip_id).exists()  # never cached
    other = client.get("/api/next?annotator=bob").json  # left out for everyone
    assert session.question(other["question"]["question_id"]).clip_id != bad.clip_id


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5])
def test_a_clip_file_cut_to_part_of_its_bytes_is_refused(video_root, tmp_path, keep):
    from moviefib.human.clips import ClipCache, ClipRefused

    src = clip_path(video_root, 0)
    root = tmp_path / "videos"
    cut = root / src.relative_to(video_root)
    cut.parent.mkdir(parents=True)
    data = src.read_bytes()
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ClipRefused, match=f"clip {src.stem}: .*(cut short|cannot open|cannot transcode|no decodable)"):
        ClipCache(root, tmp_path / "cache").get(src.stem)
    assert not list((tmp_path / "cache").glob("*.webm"))


def test_a_still_image_named_avi_is_not_a_clip(video_root, tmp_path):
    import av
    import numpy as np

    from moviefib.human.clips import ClipCache, ClipRefused

    cid = "1001_STILL_00.00.01.000-00.00.03.500"
    path = tmp_path / "1001_STILL" / f"{cid}.avi"
    path.parent.mkdir()
    with av.open(str(tmp_path / "still.png"), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    path.write_bytes((tmp_path / "still.png").read_bytes())
    with pytest.raises(ClipRefused, match="still image"):
        ClipCache(tmp_path, tmp_path / "cache").get(cid)
    # a generic id has no expected length: the still image is refused all the same
    (tmp_path / "photo.mp4").write_bytes(path.read_bytes())
    with pytest.raises(ClipRefused, match="still image"):
        ClipCache(tmp_path, tmp_path / "cache").get("photo")


@pytest.mark.parametrize("clip_id", ["../outside", "/etc/passwd", "a/../../b", "1001_X/../../../e_00.00.01.000-"
                                     "00.00.02.000", "nul\x00byte"])
def test_clip_ids_never_lead_outside_the_video_root(tmp_path, clip_id):
    from moviefib.human.clips import ClipCache, ClipRefused

    (tmp_path / "outside.avi").write_bytes(b"x")
    with pytest.raises(ClipRefused, match="clip"):
        ClipCache(tmp_path / "root", tmp_path / "cache").get(clip_id)


def test_prepare_transcodes_ahead_and_lists_short_clips(dataset, video_root, tmp_path, capsys):
    """`human prepare` fills the cache, and names each refused clip with both durations (exit 4)."""
    order, _, clips = _short_clip_session(dataset, video_root, tmp_path)
    args = ["human", "prepare", str(dataset), "--split", "val", "--video-root", str(clips.video_root),
            "--cache-dir", str(clips.cache_dir), "--no-progress"]
    assert cli_main(args) == 4
    out, err = capsys.readouterr()
    bad = order[0].clip_id
    assert f"refused: clip {bad}:" in err and "decoded 0.83 s of the 2.50 s" in err
    assert "5 of 6 clips ready" in out and "2 questions will be left out" in out
    assert all(clips.cache_path(q.clip_id).is_file() for q in order if q.clip_id != bad)
    write_avi(clips.source(bad), frames=30)  # repaired: a new file, judged anew
    assert cli_main(args) == 0 and "6 of 6 clips ready" in capsys.readouterr().out


# --- server guards (Flask test client) --------------------------------------------------------------------

def _client(tmp_path, **options):
    session = AnnotationSession(_questions(), "text", tmp_path / "answers.jsonl")
    return create_app(session, None, ServerOptions(**options)).test_client()


def test_server_validates_input_and_refuses_protocol_breaks(tmp_path):
    client = _client(tmp_path)
    def post(**body):
        return client.post("/api/answer", json=dict(annotator="ann", seconds=1.0, **body))

    r = post(question_id="q0", answer="two words")
    assert r.status_code == 400 and "One word only" in r.json["error"]
    assert post(question_id="nope", answer="x").status_code == 400
    assert client.post("/api/answer", data="answer=x").status_code == 400  # not JSON
    r = client.post("/api/answer", json=dict(annotator="a b", question_id="q0", answer="x", seconds=1))
    assert r.status_code == 400 and "annotator id" in r.json["error"]
    r = post(question_id="q0", answer="x", skipped="yes")
    assert r.status_code == 400
    assert post(question_id="q0", answer="door").status_code == 200
    assert post(question_id="q0", answer="door").status_code == 409
    assert client.get("/api/next?annotator=ann").json["question"]["question_id"] == "q2"
    assert client.get("/clip/q0").status_code == 404  # text mode serves no clip
    assert len(read_answers(tmp_path / "answers.jsonl")) == 1


def test_token_and_host_guards(tmp_path):
    open_client = _client(tmp_path)
    assert open_client.get("/api/config").status_code == 200
    assert open_client.get("/api/config", headers={"Host": "evil.example:8765"}).status_code == 403

    client = _client(tmp_path, token="s3cret", loopback=False)
    assert client.get("/").status_code == 403
    assert client.get("/api/next?annotator=ann&token=wrong").status_code == 403
    r = client.get("/?token=s3cret")
    assert r.status_code == 200 and "moviefib_human_token=s3cret" in r.headers["Set-Cookie"]
    assert client.get("/api/config").status_code == 200  # the cookie now carries the token
    # bound to a LAN address, any Host is fine as long as the token comes along
    assert client.get("/api/config", headers={"Host": "10.0.0.5:8765", "X-MovieFIB-Token": "s3cret"}
                      ).status_code == 200
    assert client.get("/api/config", headers={"Host": "10.0.0.5:8765"}).status_code == 403


def test_video_server_prefetches_the_next_clip_and_serves_ranges(dataset, video_root, tmp_path):
    import time

    from moviefib.human.clips import ClipCache

    order = load_questions(dataset, "val")
    session = AnnotationSession(order, "video", tmp_path / "answers.jsonl")
    clips = ClipCache(video_root, tmp_path / "cache")
    client = create_app(session, clips, ServerOptions()).test_client()
    first = client.get("/api/next?annotator=ann").json["question"]
    assert first["question_id"] == order[0].question_id and first["clip_url"] == f"/clip/{first['question_id']}"
    following = session.following("ann", order[0])
    assert following.sentence_id != order[0].sentence_id
    cached = clips.cache_path(following.clip_id)
    deadline = time.monotonic() + 30
    while not cached.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cached.is_file()  # transcoded before anyone asked for it
    r = client.get(first["clip_url"])
    assert r.status_code == 200 and r.mimetype == "video/webm" and r.data[:4] == b"\x1a\x45\xdf\xa3"
    r = client.get(first["clip_url"], headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.data) == 100
    assert client.get("/clip/unknown").status_code == 404
    client.post("/api/answer", json={"annotator": "ann", "question_id": first["question_id"], "answer": "x",
                                     "seconds": 2, "skipped": False})
    assert client.get("/api/next?annotator=ann").json["question"]["question_id"] == following.question_id


@pytest.mark.parametrize("extra, code, message", [
    (["--host", "0.0.0.0"], 2, "needs --token|give --token"),
    (["--mode", "video"], 2, "needs --video-root"),
    (["--split", "test"], 3, "no split 'test'"),
    (["--sample", "50"], 3, "cannot sample 50"),
])
def test_cli_refuses_bad_settings_in_one_line(dataset, tmp_path, capsys, extra, code, message):
    args = ["human", "serve", str(dataset), "--split", "val", "--mode", "text",
            "--answers", str(tmp_path / "a.jsonl"), "--port", "0"]
    # argparse keeps the last value of a repeated option, so `extra` overrides the defaults above
    assert cli_main(args + extra) == code
    err = capsys.readouterr().err
    assert err.startswith("moviefib human: error:") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err)


def test_cli_refuses_missing_clips_and_bad_answer_files(dataset, tmp_path, capsys):
    base = ["human", "serve", str(dataset), "--split", "val", "--port", "0"]
    assert cli_main(base + ["--mode", "video", "--video-root", str(tmp_path), "--answers",
                            str(tmp_path / "a.jsonl")]) == 3
    assert "12 of 12 questions have no clip" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert cli_main(base + ["--mode", "text", "--answers", str(bad)]) == 3
    assert "bad.jsonl:1:" in capsys.readouterr().err


# --- end to end: the real command, driven in headless Chromium --------------------------------------------

class Served:
    """``moviefib human serve`` in a subprocess, on a free port."""

    def __init__(self, *args: str):
        # SIGINT back to its default in the server: a suite started in the background (nohup, `cmd &`)
        # ignores SIGINT, the server inherited that, and Python then installs no KeyboardInterrupt.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moviefib", "human", "serve", *args, "--port", "0"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        timer = threading.Timer(60, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                if line.startswith("open "):
                    self.url = line.split()[1]
                    break
            else:
                raise AssertionError(f"server did not start: {self.proc.stderr.read()}")
        finally:
            timer.cancel()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # a server that does not stop is the failure, not a process left behind
            raise
        assert self.proc.returncode == 0, err
        assert "stopped" in out


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright (pip install playwright)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _start(page, url: str, annotator: str) -> str:
    page.goto(url)
    page.fill("#annotator", annotator)
    page.click("#start")
    page.wait_for_selector("#task", state="visible")
    return page.get_attribute("#answer-form", "data-question-id")


def _send(page, answer: str | None) -> str:
    """Answer (or skip, with None) the question on screen; the id of the next one ('' when done)."""
    before = page.get_attribute("#answer-form", "data-question-id")
    if answer is None:
        page.click("#skip")
    else:
        page.fill("#answer", answer)
        page.click("#submit")
    page.wait_for_function(
        "q => document.getElementById('answer-form').dataset.questionId !== q"
        " || !document.getElementById('done').hidden", arg=before)
    return page.get_attribute("#answer-form", "data-question-id")


def _refused(page, answer: str) -> str:
    page.fill("#answer", answer)
    page.click("#submit")
    page.wait_for_function("document.getElementById('message').textContent !== ''")
    text = page.text_content("#message")
    page.evaluate("document.getElementById('message').textContent = ''")
    return text


def _expected_order(dataset: Path) -> list[HumanQuestion]:
    return load_questions(dataset, "val", seed=0)


@pytest.mark.slow
def test_text_mode_end_to_end_with_restart(browser, dataset, tmp_path):
    answers = tmp_path / "human.jsonl"
    order = _expected_order(dataset)
    sentence = {q.question_id: q.sentence_id for q in order}
    server = Served(str(dataset), "--split", "val", "--mode", "text", "--answers", str(answers))
    context = browser.new_context()
    try:
        page = context.new_page()
        q1 = _start(page, server.url, "alice")
        assert q1 == order[0].question_id
        assert page.text_content("#before") == order[0].before
        assert page.text_content("#mode") == "text mode"
        assert page.is_hidden("#video-box")
        assert "Type the missing word" in _refused(page, "")
        assert "One word only" in _refused(page, "two words")
        assert "Too long" in _refused(page, "x" * 40)
        assert "Letters and digits" in _refused(page, "<b>")
        assert not answers.read_text()  # nothing refused was written
        q2 = _send(page, "Opens")
        q3 = _send(page, None)
        q4 = _send(page, "door")
        seen = [q1, q2, q3]
        assert len({sentence[q] for q in seen}) == 3  # never two blanks of one sentence
        records = [json.loads(line) for line in answers.read_text().splitlines()]
        assert [list(r) for r in records] == [list(FIELDS)] * 3
        assert [(r["question_id"], r["answer"], r["mode"], r["annotator"], r["skipped"]) for r in records] == [
            (q1, "Opens", "text", "alice", False), (q2, None, "text", "alice", True),
            (q3, "door", "text", "alice", False)]
        assert all(0 < r["seconds"] < 60 for r in records)
        assert "3 done in text mode" in page.text_content("#progress")
        server.stop()

        server = Served(str(dataset), "--split", "val", "--mode", "text", "--answers", str(answers))
        # a new port is a new origin for the browser: only the answer file knows where alice stopped
        assert _start(page, server.url, "alice") == q4
        assert sentence[q4] not in {sentence[q] for q in seen}
        assert "3 done in text mode, 3 to go" in page.text_content("#progress")
        other = browser.new_context().new_page()  # another annotator starts from the beginning
        assert _start(other, server.url, "carol") == q1
        _send(other, "walks")
        _send(page, "car")
        _send(page, "girl")
        _send(page, "rain")
        assert page.is_visible("#done") and page.is_hidden("#task")
        assert "6 done in text mode, 0 to go" in page.text_content("#done-progress")
        other.context.close()
    finally:
        context.close()
        server.stop()
    by = {}
    for r in read_answers(answers):
        by.setdefault(r.annotator, []).append(r.question_id)
    assert len(by["alice"]) == 6 and len({sentence[q] for q in by["alice"]}) == 6
    assert by["carol"] == [q1]


@pytest.mark.slow
def test_video_mode_plays_the_clip_and_text_mode_then_avoids_it(browser, dataset, video_root, tmp_path):
    answers = tmp_path / "human.jsonl"
    cache = tmp_path / "cache"
    order = _expected_order(dataset)
    sentence = {q.question_id: q.sentence_id for q in order}
    server = Served(str(dataset), "--split", "val", "--mode", "video", "--answers", str(answers),
                    "--video-root", str(video_root), "--cache-dir", str(cache))
    context = browser.new_context()
    try:
        page = context.new_page()
        q1 = _start(page, server.url, "bob")
        assert page.text_content("#mode") == "video mode"
        page.wait_for_function("Number(document.getElementById('video-state').dataset.readyState) >= 2",
                               timeout=30_000)
        assert page.evaluate("document.getElementById('clip').readyState") >= 2
        assert page.evaluate("document.getElementById('clip').muted")
        assert page.evaluate("document.getElementById('clip').videoWidth") == 96
        assert "readyState" in page.text_content("#video-state")
        q2 = _send(page, "opens")
        page.wait_for_function("Number(document.getElementById('video-state').dataset.readyState) >= 2",
                               timeout=30_000)
        q3 = _send(page, "smiles")
        page.wait_for_function("Number(document.getElementById('video-state').dataset.readyState) >= 2",
                               timeout=30_000)
        from moviefib.human.clips import ClipCache

        clip = {q.question_id: q.clip_id for q in order}
        shown = {clip[q1], clip[q2], clip[q3]}
        names = ClipCache(video_root, cache)
        assert all(names.cache_path(c).is_file() for c in shown)
        # one file per clip: those shown, and perhaps the next one, prefetched
        assert len(shown) <= len(list(cache.glob("*.webm"))) <= len(shown) + 1
    finally:
        context.close()
        server.stop()
    records = read_answers(answers)
    assert [(r.question_id, r.mode, r.annotator) for r in records] == [(q1, "video", "bob"), (q2, "video", "bob")]

    server = Served(str(dataset), "--split", "val", "--mode", "text", "--answers", str(answers))
    context = browser.new_context()
    try:
        q = _start(context.new_page(), server.url, "bob")
        assert q not in (q1, q2) and sentence[q] not in (sentence[q1], sentence[q2])
    finally:
        context.close()
        server.stop()


def test_a_cut_clip_without_an_id_is_judged_by_its_header_as_extraction_does(tmp_path):
    """No clip id and no dataset times: a container cut short is judged by its header, not served."""
    pytest.importorskip("av")
    from moviefib.human.clips import ClipCache, ClipRefused
    from moviefib.video import write_synthetic_video

    root = tmp_path / "videos"
    root.mkdir()
    whole = write_synthetic_video(tmp_path / "whole.avi", 300, codec="mpeg4", size=(160, 120))
    data = whole.read_bytes()
    (root / "cut.avi").write_bytes(data[:int(len(data) * 0.4)])
    with pytest.raises(ClipRefused, match=r"cut\.avi: file cut short: its AVI RIFF chunks declare"):
        ClipCache(root, tmp_path / "cache").get("cut")
    (root / "whole.avi").write_bytes(data)
    assert ClipCache(root, tmp_path / "cache").get("whole").is_file()


def test_questions_without_a_blank_are_left_out_and_counted(tmp_path, caplog):
    """An imported official file keeps rows whose FILL_IN lost its blank; the page cannot show them."""
    import pyarrow.parquet as pq

    from moviefib.human.questions import load_questions

    folder = write_dataset(tmp_path / "ds")
    path = folder / "data" / "val.parquet"
    table = pq.read_table(path)
    questions = table.column("question").to_pylist()
    questions[0] = table.column("sentence")[0].as_py()  # the release's quirk: no '_____' left
    pq.write_table(table.set_column(table.column_names.index("question"), "question",
                                    __import__("pyarrow").array(questions)), path)
    with caplog.at_level("WARNING"):
        got = load_questions(folder, "val")
    assert len(got) == 11 and "q00" not in {q.question_id for q in got}
    assert "1 questions without a blank" in caplog.text
