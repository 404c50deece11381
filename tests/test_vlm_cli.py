"""``moviefib predict-vlm``: bad inputs in one line with their exit status, and kill -9 then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vlm_standin import StandIn, write_clips

from moviefib.cli import main
from moviefib.exits import EXIT_INVALID, EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, EXIT_USAGE

SECRET = "sk-test-KILLED-7c1e"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_cli_videos")
    return root, write_clips(tiny_dataset, "val", root)


def _argv(dataset, root, url, out, *extra) -> list[str]:
    return ["predict-vlm", str(dataset), "--split", "val", "--video-root", str(root), "--endpoint", url,
            "--model", "standin-vl", "--out", str(out), "--frames", "4", "--frame-size", "64",
            "--concurrency", "4", "--backoff", "0.001", "--no-progress", *extra]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("moviefib predict-vlm: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_the_command_writes_a_submission_and_says_what_it_did(tiny_dataset, clips, tmp_path, capsys):
    root, answers = clips
    with StandIn(answers=answers) as server:
        code = main(_argv(tiny_dataset, root, server.start(), tmp_path / "v.tsv"))
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert f"{len(answers)} questions, {len(answers)} asked" in out and "questions/s" in out


@pytest.mark.parametrize("change, code, words", [
    ({"--split": "nosuch"}, EXIT_INVALID, "nosuch"),
    ({"--video-root": "/nonexistent/videos"}, EXIT_INVALID, "no such folder"),
    ({"--prompt-file": "PROMPT"}, EXIT_INVALID, "exactly once"),
    ({"--frames": "0"}, EXIT_USAGE, "frames per question"),
    ({"--concurrency": "0"}, EXIT_USAGE, "concurrency"),
    ({"--endpoint": "localhost:8000"}, EXIT_USAGE, "http(s) URL"),
    ({"--endpoint": "http://user:pw@localhost:8000/v1"}, EXIT_USAGE, "password"),
    ({"--endpoint": "http://127.0.0.1:abc/v1"}, EXIT_USAGE, "not a URL"),
    ({"--endpoint": "http://[::1/v1"}, EXIT_USAGE, "not a URL"),
    ({"--endpoint": "http://local host:8000/v1"}, EXIT_USAGE, "space"),
    ({"--api-key-env": "MOVIEFIB_TEST_NO_SUCH_KEY"}, EXIT_USAGE, "MOVIEFIB_TEST_NO_SUCH_KEY: the variable is not set"),
    ({"--out": "OUTDIR"}, EXIT_INVALID, "a folder"),
    ({"--video-root": "EMPTY"}, EXIT_INVALID, "none of the"),
])
def test_bad_inputs_are_one_line_errors(tiny_dataset, clips, tmp_path, capsys, change, code, words):
    root, _ = clips
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("no placeholder")
    (tmp_path / "OUTDIR").mkdir()
    (tmp_path / "EMPTY").mkdir()
    argv = _argv(tiny_dataset, root, "http://127.0.0.1:9/v1", tmp_path / "v.tsv")
    for flag, value in change.items():
        value = str(prompt) if value == "PROMPT" else str(tmp_path / value) if value.isupper() else value
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == code
    assert words in _one_line_error(capsys)
    assert not (tmp_path / "v.tsv").exists()


def test_an_unreachable_endpoint_is_exit_5(tiny_dataset, clips, tmp_path, capsys):
    import socket

    root, _ = clips
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    assert main(_argv(tiny_dataset, root, url, tmp_path / "v.tsv", "--retries", "2")) == EXIT_UNAVAILABLE
    err = _one_line_error(capsys)
    assert "after 2 attempts" in err and "cannot connect" in err and "rerun" in err


def test_failed_clips_are_exit_4_with_the_failure_manifest(tiny_dataset, clips, tmp_path, capsys):
    import shutil

    src, answers = clips
    root = tmp_path / "videos"
    shutil.copytree(src, root)
    next(root.rglob("*.avi")).write_bytes(b"not a video at all")
    with StandIn(answers=answers) as server:
        code = main(_argv(tiny_dataset, root, server.start(), tmp_path / "v.tsv"))
    assert code == EXIT_PARTIAL
    assert "failures (1 clips) listed in" in capsys.readouterr().err
    assert (tmp_path / "v.tsv.failures.jsonl").is_file() and (tmp_path / "v.tsv").is_file()


def _cached_ids(cache: Path) -> set[str]:
    """Question ids of the complete reply records of a reply cache (as a rerun will read it; the
    sent marks left aside)."""
    data = cache.read_bytes()
    records = [json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]
    return {r["question_id"] for r in records if "sent" not in r}


def _command(dataset, root, url, out) -> list[str]:
    # A request timeout longer than _wait_for's deadline: a request held at the gate is never timed
    # out and sent again while the test waits, however loaded the machine (the count held stays 4).
    return [sys.executable, "-m", "moviefib", *_argv(dataset, root, url, out, "--timeout", "600")]


def _wait_for(predicate, proc, what: str, limit: float = 300.0) -> None:
    """Poll ``predicate`` until it holds (a deadline only against a hang: no timing is asserted)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"predict-vlm exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {limit:.0f} s")
        time.sleep(0.05)


def test_kill_9_mid_run_then_rerun_asks_no_received_reply_again(tiny_dataset, clips, tmp_path):
    root, answers = clips
    out = tmp_path / "v.tsv"
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONPATH": str(ROOT)}
    first = StandIn(answers=answers, api_key=SECRET, gate_after=len(answers) // 2)
    proc = subprocess.Popen(_command(tiny_dataset, root, first.start(), out), env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Every worker holds a request at the gate: 4 requests in flight, all earlier replies received.
        _wait_for(lambda: len(first.held) == 4, proc, "4 requests held in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        received, in_flight = set(first.answered()), set(first.held)
    finally:
        first.stop()
    cached = _cached_ids(out.with_name("v.tsv.replies.jsonl"))
    assert cached == received and len(received) == len(answers) // 2 and not out.exists()

    with StandIn(answers=answers, api_key=SECRET) as second:
        rerun = subprocess.run(_command(tiny_dataset, root, second.start(), out), env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=600)
        asked_again = second.requested()
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert "HTTP Request" not in rerun.stderr  # the HTTP library's line per request is not shown
    assert not set(asked_again) & received  # no received reply requested again
    repeated = set(asked_again) & in_flight
    assert repeated == in_flight and len(repeated) <= 4  # the requests in flight at the kill, no more
    assert sorted(asked_again) == sorted(set(answers) - received)
    assert f"{len(answers) // 2} from the reply cache" in rerun.stdout
    # The rerun counts the repeated requests itself, from the sent marks of the killed run.
    assert f"note: {len(in_flight)} requests in flight when an earlier run stopped were sent again" in rerun.stdout
    from moviefib.evaluate import evaluate

    result = evaluate(tiny_dataset, [str(out)], split="val", bootstrap=0).submissions[0]
    assert result.validation.ok and result.summary.missing == 0
    for f in tmp_path.iterdir():
        assert SECRET not in f.read_text() and SECRET not in rerun.stdout + rerun.stderr
