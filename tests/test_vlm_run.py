"""predict_vlm against the localhost stand-in server (tests/vlm_standin.py): replies, faults, resumption."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from vlm_standin import StandIn, style_of, write_clips

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
