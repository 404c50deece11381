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


@pytest.mark.parametrize("reply, word", [
    ("door.\nExplanation: the man opens it.", "door"),  # a trailing explanation
    ('Door\n\nExplanation: he opens the "front" door', "door"),
    ("window\n\nActually, the answer is door.", "door"),  # the last lead-in before the first line
    ("The answer is door. The man opens the door.", "door"),
    ("Door.</s>", "door"), ("door<|im_end|>", "door"), ("<answer>door</answer>", "door"),  # template leaks
    ("\\boxed{door}", "door"), ("The answer is $\\boxed{door}$.", "door"),
    ("the man opens it, so door </think>\n\n**Door**", "door"),  # </think> without its opening tag
    ("- door", "door"), ("\u200bdoor\u200b", "door"), ("\uff44\uff4f\uff4f\uff52", "door"),
    ("cafe\u0301", "caf\u00e9"), ("Sure! Here is the answer:\n\n**door**", "door"), ("T-Shirt", "t-shirt"),
])
def test_parse_rule_2_reads_what_models_really_send(reply, word):
    assert parse_reply(reply).answer == word


@pytest.mark.parametrize("reply", ["door\ud83d", "\ud83d", "<think>x</think>", "</think>", "_____",
                                   "**_____**", "The answer is _____.", "\u200b"])
def test_lone_surrogates_reasoning_only_and_the_blank_itself_are_unparsed(reply):
    assert parse_reply(reply).answer is None


def test_every_reduced_word_is_one_the_evaluator_accepts(tiny_dataset, tmp_path):
    from moviefib.dataset import read_table
    from moviefib.evaluate import evaluate, write_submission

    replies = ["**door**", "Answer: door", "<think>x</think>door", "caf\u00e9", "t-shirt", "don\u2019t", "42",
               "", " ", "_____", "door\ud83d", "\u200bdoor", "Door.</s>", "a red car", None, "x\x85y", "\u3000door"]
    ids = read_table(tiny_dataset, "val", columns=["question_id"]).column(0).to_pylist()
    answers = {q: parse_reply(replies[i % len(replies)]).submitted for i, q in enumerate(ids)}
    sub = write_submission(tmp_path / "sub.tsv", answers)
    result = evaluate(tiny_dataset, [str(sub)], split="val", bootstrap=0).submissions[0]
    assert result.validation.ok and not result.validation.counts


def test_a_completion_body_is_read_by_what_it_is():
    from moviefib.vlm.replies import NotACompletion, read_completion

    def completion(content):
        return json.dumps({"model": "m", "choices": [{"finish_reason": "stop",
                                                      "message": {"content": content}}]}).encode()

    assert read_completion(completion("door"), "application/json").text == "door"
    parts = [{"type": "text", "text": "do"}, {"type": "image_url"}, {"type": "text", "text": "or"}]
    assert read_completion(completion(parts), "application/json").text == "door"
    assert read_completion(completion(None), "application/json").text is None
    events = b'data: {"choices":[{"delta":{"content":"do"}}]}\n\ndata: {"choices":[{"delta":' \
             b'{"content":"or"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    got = read_completion(events, "text/event-stream")
    assert (got.text, got.finish_reason) == ("door", "stop")
    for body, kind, retry in ((b"<html>Welcome</html>", "text/html", False),
                              (b'{"choices": [{"mess', "application/json", True),
                              (b'{"choices": []}', "application/json", True),
                              (b'{"error": {"message": "overloaded"}}', "application/json", True),
                              (completion(42), "application/json", True),
                              (b"data: not json\n\n", "text/event-stream", True)):
        with pytest.raises(NotACompletion) as info:
            read_completion(body, kind)
        assert info.value.retry is retry and "\n" not in str(info.value)


@pytest.mark.parametrize("url, words", [
    ("localhost:8000", "http(s) URL"), ("ftp://host/v1", "http(s) URL"), ("http://host:abc/v1", "not a URL"),
    ("http://host:99999/v1", "not a URL"), ("http://[::1/v1", "not a URL"), ("http://ho st/v1", "space"),
    ("http://host/v1\n", "control"), ("", "empty"), ("http://u:pw@host/v1", "password"),
    ("http://host/v1/chat/completions", "base URL"),
])
def test_endpoints_that_are_not_an_api_base_are_refused(url, words):
    from moviefib.vlm.client import endpoint_problem

    assert words in endpoint_problem(url)


def test_endpoints_are_shown_without_credentials():
    from moviefib.vlm.client import endpoint_problem, shown_endpoint

    assert endpoint_problem("https://h.example/v1?api-version=2024-06-01") is None
    assert shown_endpoint("https://u:pw@h/v1") == "https://***@h/v1"
    assert shown_endpoint("https://h/v1?key=SECRET&api-version=2") == "https://h/v1?key=***&api-version=2"
    assert shown_endpoint("http://[::1/v1") == ""


def test_sent_marks_tell_a_rerun_which_requests_were_in_flight(tmp_path):
    path = tmp_path / "r.jsonl"
    with ReplyCache(path) as cache:
        cache.mark_sent("q1", "f")
        cache.append(_record("q1"))
        cache.mark_sent("q2", "f")  # killed before its reply
    cache = ReplyCache(path)
    cache.close()
    assert cache.in_flight("q2", "f") and not cache.in_flight("q1", "f") and not cache.in_flight("q2", "g")
    assert set(cache.records) == {("q1", "f")}


@pytest.mark.parametrize("make", ["folder", "fifo"])
def test_a_reply_cache_that_is_not_a_file_is_refused_not_read(tmp_path, make):
    import os

    path = tmp_path / "r.jsonl"
    path.mkdir() if make == "folder" else os.mkfifo(path)  # a FIFO would block the read forever
    with pytest.raises(CacheError, match="not a regular file"):
        ReplyCache(path)
