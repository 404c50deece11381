"""predict_vlm against the localhost stand-in server (tests/vlm_standin.py): replies, faults, resumption."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from vlm_standin import StandIn, reply_text, style_of, write_clips

from moviefib.vlm import FrameSpec, RetryPolicy, VLMConfig, output_paths, predict_vlm
from moviefib.vlm.client import EndpointUnavailable, RequestRefused

SECRET = "sk-test-NEVER-WRITTEN-4f9a"


@pytest.fixture(scope="module")
def clips(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_videos")
    return root, write_clips(tiny_dataset, "val", root)


def _config(url: str, **kw) -> VLMConfig:
    base = dict(endpoint=url, model="standin-vl", frames=FrameSpec(n=4, max_side=64),
                retry=RetryPolicy(base=0.001, timeout=60.0), concurrency=4)
    return VLMConfig(**{**base, **kw})


def _evaluate(dataset, path):
    from moviefib.evaluate import evaluate

    return evaluate(dataset, [str(path)], split="val", bootstrap=0).submissions[0]


def test_a_run_with_faults_gives_a_submission_the_evaluator_scores_without_flags(
        tiny_dataset, clips, tmp_path, monkeypatch):
    root, answers = clips
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    waits = []
    faults = {2: "429", 3: "500", 5: "malformed", 9: "429", 12: "500"}
    with StandIn(answers=answers, api_key=SECRET, expect_frames=4, max_side=64, faults=faults,
                 retry_after="7") as server:
        out = tmp_path / "vlm.tsv"
        summary = predict_vlm(tiny_dataset, split="val", video_root=root, out=out,
                              config=_config(server.start()), sleep=waits.append)
        assert server.problems == []  # every request: the key, 4 decodable JPEGs of at most 64 px
        assert {r.frames for r in server.records if r.outcome == "ok"} == {4}
        assert {r.max_side for r in server.records if r.outcome == "ok"} == {64}
        assert Counter(server.answered()) == Counter(answers.keys())  # each question answered exactly once
    assert summary.questions == summary.asked == len(answers) and summary.reused == 0
    assert summary.retries == {"429": 2, "500": 2, "malformed": 1}
    assert waits.count(7.0) == 2  # Retry-After honoured; the others are short back-offs
    several = sum(style_of(q) == "several" for q in answers)
    assert summary.unparsed == several > 0 and summary.no_video == 0 and summary.failures_path is None
    result = _evaluate(tiny_dataset, out)
    assert result.validation.ok and result.summary.invalid == 0
    # The stand-in replies with the true answer in every style; only "several words" cannot be read.
    assert result.summary.correct == len(answers) - several


def test_the_settings_say_what_was_asked_and_no_output_holds_the_key(tiny_dataset, clips, tmp_path, monkeypatch):
    root, answers = clips
    monkeypatch.setenv("MY_VLM_KEY", SECRET)
    with StandIn(answers=answers, api_key=SECRET) as server:
        out = tmp_path / "vlm.json"
        predict_vlm(tiny_dataset, split="val", video_root=root, out=out,
                    config=_config(server.start(), api_key_env="MY_VLM_KEY"))
    settings = json.loads(output_paths(out)["settings"].read_text())
    assert settings["model"] == "standin-vl" and settings["endpoint"].startswith("http://127.0.0.1:")
    assert settings["prompt"]["version"] == "moviefib-vlm-prompt-1" and "{question}" in settings["prompt"]["text"]
    assert settings["frames"]["sampling"] == {"type": "Uniform", "n": 4}
    assert settings["frames"]["max_side"] == 64 and settings["api_key_env"] == "MY_VLM_KEY"
    assert settings["counts"]["questions"] == len(answers) and settings["api_key_set"] is True
    assert json.loads(out.read_text()).keys() == answers.keys()  # a JSON submission by its suffix
    for f in tmp_path.iterdir():
        assert SECRET.encode() not in f.read_bytes(), f


def test_a_rerun_asks_nothing_and_new_settings_ask_again(tiny_dataset, clips, tmp_path):
    root, answers = clips
    out = tmp_path / "vlm.tsv"
    with StandIn(answers=answers) as server:
        url = server.start()
        predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(url))
        first = out.read_bytes()
        again = predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(url))
        assert len(server.records) == len(answers)  # nothing sent by the rerun
        assert again.reused == len(answers) and again.asked == 0 and out.read_bytes() == first
        other = predict_vlm(tiny_dataset, split="val", video_root=root, out=out,
                            config=_config(url, frames=FrameSpec(n=3, max_side=64)))
        assert other.asked == len(answers) and len(server.records) == 2 * len(answers)
        assert other.stale == len(answers) and other.repeated == 0  # said, not silent


def test_a_timed_out_request_is_retried(tiny_dataset, clips, tmp_path):
    root, answers = clips
    with StandIn(answers=answers, faults={1: "timeout"}, hang_seconds=30) as server:
        summary = predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                              config=_config(server.start(), retry=RetryPolicy(base=0.001, timeout=3.0)))
    assert summary.retries.get("timeout", 0) >= 1 and summary.asked == len(answers)


def test_a_clip_that_fails_to_decode_is_reported_as_extraction_does_and_the_run_goes_on(
        tiny_dataset, clips, tmp_path):
    import shutil

    src, answers = clips
    root = tmp_path / "videos"
    shutil.copytree(src, root)
    avis = sorted(root.rglob("*.avi"))
    avis[0].write_bytes(b"\x00" * 4096)  # undecodable
    avis[1].unlink()  # absent
    with StandIn(answers=answers) as server:
        out = tmp_path / "v.tsv"
        summary = predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(server.start()))
    records = [json.loads(line) for line in open(summary.failures_path)]
    assert {r["clip_id"] for r in records} == {avis[0].stem, avis[1].stem}
    assert all(set(r) == {"clip_id", "path", "reason"} for r in records)
    reasons = {r["clip_id"]: r["reason"] for r in records}
    assert reasons[avis[1].stem].endswith("no such file") and "cannot open" in reasons[avis[0].stem]
    assert summary.no_video > 0 and summary.asked == len(answers) - summary.no_video
    result = _evaluate(tiny_dataset, out)  # their questions are '?': scored wrong, no flag needed
    assert result.validation.ok and result.summary.missing == 0


def test_an_unreachable_endpoint_after_the_retries_is_endpoint_unavailable(tiny_dataset, clips, tmp_path):
    import socket

    root, _ = clips
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "v.tsv"
    with pytest.raises(EndpointUnavailable, match="after 3 attempts"):
        predict_vlm(tiny_dataset, split="val", video_root=root, out=out,
                    config=_config(f"http://127.0.0.1:{port}/v1", retry=RetryPolicy(attempts=3, base=0.001)))
    assert not out.exists()  # no submission until every question has an answer


def test_a_wrong_key_is_refused_without_retrying(tiny_dataset, clips, tmp_path, monkeypatch):
    root, answers = clips
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with StandIn(answers=answers, api_key=SECRET) as server:
        with pytest.raises(RequestRefused, match="HTTP 401: Incorrect API key.*--api-key-env") as info:
            predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                        config=_config(server.start(), concurrency=1))
        assert info.value.status == 401 and len(server.records) == 1


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "videos")),
                    reason="../shared/videos is absent: no real videos to decode")
def test_real_videos_as_clips(tiny_dataset, shared_videos, tmp_path):
    """Real h264 and MPEG-2 files (a stream that starts at 0.54 s) as the clip files of the split."""
    from moviefib.dataset import read_table
    from moviefib.formats import movie_of

    table = read_table(tiny_dataset, "val", columns=["question_id", "clip_id", "answer"])
    real = [shared_videos[n] for n in ("bigbuckbunny.mp4", "cityCC0.mpg", "bikes.mp4")]
    for i, clip in enumerate(dict.fromkeys(table.column("clip_id").to_pylist())):
        (tmp_path / "v" / movie_of(clip)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "v" / movie_of(clip) / f"{clip}.avi").symlink_to(real[i % len(real)])
    answers = dict(zip(table.column("question_id").to_pylist(), table.column("answer").to_pylist()))
    with StandIn(answers=answers, expect_frames=6, max_side=256) as server:
        summary = predict_vlm(tiny_dataset, split="val", video_root=tmp_path / "v", out=tmp_path / "v.tsv",
                              config=_config(server.start(), frames=FrameSpec(n=6, max_side=256)))
        assert server.problems == [] and {r.max_side for r in server.records} == {256}
    assert summary.asked == len(answers) and summary.failures_path is None


def test_bodies_as_odd_servers_send_them_are_read_by_what_they_are(tiny_dataset, clips, tmp_path):
    """Content as a list of parts, an event stream nobody asked for, content null: read, not retried."""
    root, answers = clips
    faults = {1: "parts", 2: "sse", 3: "null", 4: "parts", 5: "sse"}
    with StandIn(answers=answers, faults=faults) as server:
        out = tmp_path / "v.tsv"
        summary = predict_vlm(tiny_dataset, split="val", video_root=root, out=out,
                              config=_config(server.start(), concurrency=1))
        assert len(server.records) == len(answers)  # none of them retried
    assert summary.retries == {} and summary.asked == len(answers)
    records = [json.loads(line) for line in open(summary.cache_path)]
    by_number = [r for r in records if "sent" not in r][:5]
    assert by_number[2]["reply"] is None and by_number[2]["rule"].startswith("unparsed")
    for r in (by_number[0], by_number[1], by_number[3], by_number[4]):
        assert r["reply"] == reply_text(r["question_id"], answers[r["question_id"]])
    assert _evaluate(tiny_dataset, out).validation.ok


@pytest.mark.parametrize("fault, words", [
    ("html", "a reply of type text/html, not JSON"),
    ("huge", "a reply of more than 4 MiB"),
])
def test_a_body_that_is_no_completion_and_will_not_become_one_stops_at_once(tiny_dataset, clips, tmp_path,
                                                                            fault, words):
    root, answers = clips
    with StandIn(answers=answers, every={fault: 1}) as server:
        with pytest.raises(RequestRefused, match=words) as info:
            predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                        config=_config(server.start(), concurrency=1))
        assert len(server.records) == 1 and info.value.status == 200
    assert "\n" not in str(info.value) and not (tmp_path / "v.tsv").exists()


def test_a_server_that_echoes_the_key_does_not_get_it_into_the_message(tiny_dataset, clips, tmp_path, monkeypatch):
    root, answers = clips
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with StandIn(answers=answers, every={"echo_key": 1}) as server:
        with pytest.raises(RequestRefused, match=r"HTTP 400: bad header Bearer \*\*\*") as info:
            predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                        config=_config(server.start(), concurrency=1))
    assert SECRET not in str(info.value)


def test_a_key_no_header_can_carry_is_refused_without_showing_it(tiny_dataset, clips, tmp_path, monkeypatch):
    root, _ = clips
    monkeypatch.setenv("OPENAI_API_KEY", SECRET + "\r\nX-Other: 1")  # two lines pasted into the variable
    with pytest.raises(ValueError, match=r"\$OPENAI_API_KEY holds a space, a control") as info:
        predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                    config=_config("http://127.0.0.1:9/v1"))
    assert SECRET not in str(info.value)


def test_a_huge_retry_after_is_cut_to_the_cap_not_slept_nor_given_up_on(tiny_dataset, clips, tmp_path):
    root, answers = clips
    waits = []
    with StandIn(answers=answers, faults={1: "429", 2: "429"}, retry_after="99999999") as server:
        summary = predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                              config=_config(server.start(), concurrency=1,
                                             retry=RetryPolicy(base=0.001, max_retry_after=30.0)),
                              sleep=waits.append)
    assert waits == [30.0, 30.0] and summary.retries == {"429": 2} and summary.asked == len(answers)


def test_endless_429s_end_after_the_attempts_naming_the_endpoint(tiny_dataset, clips, tmp_path):
    root, answers = clips
    waits = []
    with StandIn(answers=answers, every={"429": 1}, retry_after="garbage") as server:
        url = server.start()
        with pytest.raises(EndpointUnavailable, match=rf"^{url}: no reply .* after 4 attempts \(last: HTTP 429"):
            predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                        config=_config(url, concurrency=1, retry=RetryPolicy(attempts=4, base=0.5, cap=1.0)),
                        sleep=waits.append)
    assert len(waits) == 3 and all(0.25 <= w <= 1.0 for w in waits)  # garbage Retry-After: the back-off


def test_a_clip_clearly_shorter_than_its_times_is_a_failure_as_extraction_judges_it(tiny_dataset, clips, tmp_path):
    import shutil

    from moviefib.video import write_synthetic_video

    src, answers = clips
    root = tmp_path / "videos"
    shutil.copytree(src, root)
    short = sorted(root.rglob("*.avi"))[0]
    write_synthetic_video(short, 10, size=(160, 96))  # 0.4 s of a clip of 2 s or more
    with StandIn(answers=answers) as server:
        summary = predict_vlm(tiny_dataset, split="val", video_root=root, out=tmp_path / "v.tsv",
                              config=_config(server.start()))
    [record] = [json.loads(line) for line in open(summary.failures_path)]
    assert record["clip_id"] == short.stem and "short" in record["reason"]
    assert record["decoded"] == pytest.approx(0.4, abs=0.05) and record["expected"] >= 2.0
    assert summary.no_video > 0 and summary.asked == len(answers) - summary.no_video


def test_no_clip_at_all_is_an_error_and_no_submission(tiny_dataset, tmp_path):
    from moviefib.vlm.run import OutputError

    (tmp_path / "empty").mkdir()
    out = tmp_path / "v.tsv"
    with pytest.raises(OutputError, match=r"none of the \d+ clips of the split could be read .*--video-root"):
        predict_vlm(tiny_dataset, split="val", video_root=tmp_path / "empty", out=out,
                    config=_config("http://127.0.0.1:9/v1"))
    assert not out.exists() and output_paths(out)["failures"].is_file()


@pytest.mark.parametrize("make", ["folder", "fifo", "cache folder", "cache fifo", "in dataset"])
def test_outputs_that_are_not_files_are_refused_before_any_request(tiny_dataset, clips, tmp_path, make):
    from moviefib.vlm.cache import CacheError
    from moviefib.vlm.run import OutputError

    root, answers = clips
    out = tiny_dataset / "vlm.tsv" if make == "in dataset" else tmp_path / "v.tsv"
    target = output_paths(out)["cache"] if make.startswith("cache") else out
    if make.endswith("folder"):
        target.mkdir()
    elif make.endswith("fifo"):
        os.mkfifo(target)
    with StandIn(answers=answers) as server:
        with pytest.raises((OutputError, CacheError), match="a folder|not a regular file|inside the dataset"):
            predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(server.start()))
        assert server.records == []
    assert not out.is_file()


def test_a_reply_holding_a_lone_surrogate_is_kept_and_unparsed(tiny_dataset, clips, tmp_path):
    from moviefib.vlm.cache import CachedReply, ReplyCache

    path = tmp_path / "r.jsonl"
    with ReplyCache(path) as cache:
        cache.append(CachedReply("q1", "f", "door\ud83d", None, "unparsed", "stop", "m", 1))
    assert ReplyCache(path).get("q1", "f").reply == "door\ud83d"


def test_an_out_of_another_dataset_or_split_or_no_run_is_never_replaced(tiny_dataset, clips, tmp_path):
    import shutil

    from moviefib.vlm.run import OutputError

    root, answers = clips
    out = tmp_path / "v.tsv"
    with StandIn(answers=answers) as server:
        url = server.start()
        predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(url))
        first = out.read_bytes()
        other = tmp_path / "other_dataset"
        shutil.copytree(tiny_dataset, other)
        with pytest.raises(OutputError, match=r"v.tsv: written by predict-vlm for .*split 'val'.*another --out"):
            predict_vlm(other, split="val", video_root=root, out=out, config=_config(url))
        settings = output_paths(out)["settings"]
        recorded = json.loads(settings.read_text())
        settings.write_text(json.dumps({**recorded, "split": "test"}))
        with pytest.raises(OutputError, match=r"split 'test'"):
            predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(url))
        settings.write_text(json.dumps(recorded))
        link = tmp_path / "link_to_dataset"
        link.symlink_to(tiny_dataset)  # the same dataset by another name: a rerun, nothing asked
        assert predict_vlm(link, split="val", video_root=root, out=out, config=_config(url)).asked == 0
        baseline = tmp_path / "text_2d3d_val.tsv"
        baseline.write_text("question_id\tanswer\n")  # a baseline's submission named by mistake
        with pytest.raises(OutputError, match=r"text_2d3d_val.tsv: an existing file that predict-vlm did not "):
            predict_vlm(tiny_dataset, split="val", video_root=root, out=baseline, config=_config(url))
        assert len(server.records) == len(answers)  # nothing asked by the refused runs
    assert out.read_bytes() == first and baseline.read_text() == "question_id\tanswer\n"
    assert recorded["dataset"] == str(tiny_dataset.resolve()) and len(recorded["table_sha256"]) == 64


def test_a_run_stopped_before_its_end_still_keeps_another_dataset_out(tiny_dataset, clips, tmp_path):
    import shutil

    from moviefib.vlm.run import OutputError

    class Stop(Exception):
        pass

    def stop(total, reused):
        raise Stop  # as a kill would: after the run claimed its files, before any reply

    root, answers = clips
    out = tmp_path / "v.tsv"
    other = tmp_path / "other_dataset"
    shutil.copytree(tiny_dataset, other)
    with StandIn(answers=answers) as server:
        url = server.start()
        with pytest.raises(Stop):
            predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(url), on_start=stop)
        settings = json.loads(output_paths(out)["settings"].read_text())
        assert settings["finished"] is False and not out.exists()
        with pytest.raises(OutputError, match=r"v.tsv: written by predict-vlm for .*another --out"):
            predict_vlm(other, split="val", video_root=root, out=out, config=_config(url))
        predict_vlm(tiny_dataset, split="val", video_root=root, out=out, config=_config(url))
    assert json.loads(output_paths(out)["settings"].read_text())["finished"] is True
