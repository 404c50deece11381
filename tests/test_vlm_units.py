"""moviefib.vlm pieces that need no server: the parse rule, the prompt, frames, the reply cache, Retry-After."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from moviefib.vlm.cache import CachedReply, CacheError, ReplyCache, request_fingerprint
from moviefib.vlm.client import RetryPolicy, retry_after_seconds
from moviefib.vlm.parse import UNPARSED_ANSWER, parse_reply
from moviefib.vlm.prompt import PROMPT_VERSION, PromptError, default_prompt, load_prompt


@pytest.mark.parametrize("reply, word", [
    ("red", "red"), ("Red.", "red"), ("The answer is: red.", "red"), ('"Red"', "red"), ("**door**", "door"),
    ("`box`", "box"), ("Answer: Opens", "opens"), ("The missing word is “letter”.", "letter"),
    ("answer", "answer"), ("SOMEONE", "SOMEONE"), ("Don’t", "don't"), ("t-shirt!", "t-shirt"),
    ("<think>the door is red</think>\nRed", "red"), ('I looked at it.\nThe answer is "box".', "box"),
    ('It is clearly "window" here', "window"),
])
def test_parse_rule_reduces_model_replies_to_one_word(reply, word):
    assert parse_reply(reply).answer == word


@pytest.mark.parametrize("reply", [
    None, "", "   ", "a red car", "It could be red or blue", "?", "...", "<think>still thinking",
    '"red" or "blue"', "x" * 65, "bad\x07word",
])
def test_replies_that_are_not_one_word_are_unparsed_and_submitted_as_a_question_mark(reply):
    parsed = parse_reply(reply)
    assert parsed.answer is None and parsed.rule.startswith("unparsed")
    assert parsed.submitted == UNPARSED_ANSWER


def test_the_unparsed_answer_is_valid_for_the_evaluator_and_always_wrong(tiny_dataset, tmp_path):
    from moviefib.dataset import read_table
    from moviefib.evaluate import evaluate, write_submission

    table = read_table(tiny_dataset, "val", columns=["question_id"])
    sub = write_submission(tmp_path / "sub.tsv", {q: UNPARSED_ANSWER for q in table.column(0).to_pylist()})
    result = evaluate(tiny_dataset, [str(sub)], split="val", bootstrap=0).submissions[0]
    assert result.validation.ok and not result.validation.counts  # no flag needed, nothing tolerated
    assert result.summary.correct == 0 and result.summary.correct_normalised == 0
    assert result.summary.wrong == result.summary.n == len(table)


def test_default_prompt_is_versioned_and_renders_the_question():
    p = default_prompt()
    assert p.version == PROMPT_VERSION and p.source == "builtin"
    text = p.render(question="he opens the _____ slowly", frames=6)
    assert "he opens the _____ slowly" in text and "6 frames" in text and "{" not in text


def test_prompt_file_replaces_the_prompt_and_keeps_other_braces(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text('Fill in: {question}\nReply as JSON {"word": ...}', encoding="utf-8")
    p = load_prompt(f)
    assert p.version == "file" and p.sha256 != default_prompt().sha256
    assert p.render(question="a _____", frames=2) == 'Fill in: a _____\nReply as JSON {"word": ...}'


@pytest.mark.parametrize("content, why", [
    (b"", "empty"), (b"no placeholder here", "exactly once"), (b"{question} {question}", "exactly once"),
    (b"\xff\xfe{question}", "not UTF-8"), (b"{question}\x00", "control character"),
])
def test_bad_prompt_files_are_one_line_errors(tmp_path, content, why):
    f = tmp_path / "p.txt"
    f.write_bytes(content)
    with pytest.raises(PromptError, match=why) as info:
        load_prompt(f)
    assert str(f) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PromptError, match="No such file"):
        load_prompt(tmp_path / "absent.txt")
    with pytest.raises(PromptError, match="not a regular file"):
        load_prompt(tmp_path)


def test_frames_are_sampled_by_time_and_sent_as_scaled_jpegs(tmp_path):
    from PIL import Image

    from moviefib.video import write_synthetic_video
    from moviefib.vlm.frames import FrameSpec, clip_frames

    video = write_synthetic_video(tmp_path / "clip.avi", 50, size=(160, 96))  # 2 s at 25 fps
    frames = clip_frames(str(video), FrameSpec(n=4, max_side=80, quality=80))
    assert len(frames.urls) == 4 and frames.size == (80, 48)
    # Uniform(4) over 2 s: the frames nearest 0.25, 0.75, 1.25, 1.75 s.
    assert frames.times == (0.24, 0.76, 1.24, 1.76)
    reds = []
    for url in frames.urls:
        head, _, data = url.partition(",")
        assert head == "data:image/jpeg;base64"
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        assert im.format == "JPEG" and im.size == (80, 48)
        reds.append(int(np.asarray(im)[..., 0].mean().round()))
    assert reds == [6, 19, 31, 44]  # frame i has red = i: the JPEGs are of the frames sampled


def _record(qid: str, fp: str = "f") -> CachedReply:
    return CachedReply(qid, fp, "Red.", "red", "whole", "stop", "m", 1)


def test_reply_cache_reads_back_what_was_appended_and_cuts_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    with ReplyCache(path) as cache:
        cache.append(_record("q1"))
        cache.append(_record("q2"))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"question_id": "q3", "finger')  # killed in the middle of a write
    cache = ReplyCache(path)
    cache.close()
    assert set(cache.records) == {("q1", "f"), ("q2", "f")}
    assert path.read_bytes() == whole and "cut short" in caplog.text
    # A last record that lost only its newline is kept, and the newline added.
    path.write_bytes(whole + json.dumps(_record("q3").__dict__).encode())
    with ReplyCache(path) as cache:
        assert cache.get("q3", "f") == _record("q3") and cache.get("q3", "other") is None
    assert path.read_bytes().endswith(b"}\n")


@pytest.mark.parametrize("line", [b"not json", b'{"question_id": "q"}', b'["a"]',
                                  json.dumps({**_record("q").__dict__, "attempts": "1"}).encode()])
def test_a_damaged_reply_cache_is_refused_with_its_line(tmp_path, line):
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(_record("q1").__dict__).encode() + b"\n" + line + b"\n")
    with pytest.raises(CacheError, match=r"r\.jsonl: line 2"):
        ReplyCache(path)


def test_request_fingerprint_is_canonical():
    assert request_fingerprint({"a": 1, "b": [1, 2]}) == request_fingerprint({"b": [1, 2], "a": 1})
    assert request_fingerprint({"a": 1}) != request_fingerprint({"a": 2})


def test_retry_after_in_seconds_milliseconds_and_as_a_date():
    import email.utils
    import time

    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3000 < retry_after_seconds({"retry-after": date}) <= 3600
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


def test_backoff_doubles_up_to_its_cap_and_bad_policies_are_refused():
    policy = RetryPolicy(base=1.0, cap=4.0)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)):
        assert full * 0.5 <= policy.backoff(attempt) <= full
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="timeout"):
        RetryPolicy(timeout=0)
