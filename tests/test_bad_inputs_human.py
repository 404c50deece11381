"""Bad inputs of the human page, one case each: `moviefib human ...` arguments, datasets, answer files,
clip folders, and HTTP requests to the real server. Each ends in a one-line error with the right exit
status (commands) or a 4xx JSON error (requests): never a traceback, never a 500, never a wrong record."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the human page needs Flask (pip install 'moviefib[human]')")

# The video_root fixture (test_human's clips), shared rather than written twice.
from test_human import video_root_fixture, write_dataset  # noqa: E402, F401

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.human.answers import read_answers  # noqa: E402


def _record(**changes) -> dict:
    rec = dict(question_id="q00", answer="opens", mode="text", annotator="ann", seconds=1.5, skipped=False)
    rec.update(changes)
    return rec


@pytest.fixture(autouse=True)
def _never_serve(monkeypatch):
    """A bad input must be refused before serving starts: without this, accepting one would hang."""
    from moviefib.human.server import HumanServer

    def refuse(self):
        self._server.server_close()  # not stop(): shutdown() waits for a loop that never ran
        pytest.fail("the server started despite the bad input")

    monkeypatch.setattr(HumanServer, "serve_forever", refuse)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("bad-human") / "tiny")


def _rewrite(dataset: Path, folder: Path, change) -> Path:
    """A copy of the dataset whose table went through ``change(list of row dicts) -> rows or a Table``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(dataset / "data" / "val.parquet").to_pylist()
    table = change(rows)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(table, schema=pq.read_schema(dataset / "data" / "val.parquet"))
    (folder / "data").mkdir(parents=True)
    pq.write_table(table, folder / "data" / "val.parquet")
    return folder


def _set(field: str, value, row: int = 0):
    def change(rows):
        rows[row][field] = value
        return rows
    return change


def _drop_column(name: str):
    def change(rows):
        import pyarrow as pa

        return pa.Table.from_pylist([{k: v for k, v in r.items() if k != name} for r in rows])
    return change


def _duplicate_id(rows):
    rows[1]["question_id"] = rows[0]["question_id"]
    return rows


# --- datasets given to `human serve` --------------------------------------------------------------------

def _missing(dataset, tmp):
    return tmp / "nowhere"


def _a_file(dataset, tmp):
    (tmp / "file").write_text("x")
    return tmp / "file"


def _no_data_dir(dataset, tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _garbage_parquet(dataset, tmp):
    (tmp / "g" / "data").mkdir(parents=True)
    (tmp / "g" / "data" / "val.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    return tmp / "g"


def _truncated_parquet(dataset, tmp):
    data = (dataset / "data" / "val.parquet").read_bytes()
    (tmp / "t" / "data").mkdir(parents=True)
    (tmp / "t" / "data" / "val.parquet").write_bytes(data[:len(data) // 2])
    return tmp / "t"


def _parquet_is_a_dir(dataset, tmp):
    (tmp / "d" / "data" / "val.parquet").mkdir(parents=True)
    return tmp / "d"


DATASETS = {
    "missing folder": (_missing, "no such dataset folder"),
    "a file, not a folder": (_a_file, "not a dataset folder|no such dataset folder"),
    "no data/ inside": (_no_data_dir, "not a MovieFIB dataset folder"),
    "garbage under the split's name": (_garbage_parquet, "not a readable Parquet file"),
    "parquet cut in half": (_truncated_parquet, "not a readable Parquet file"),
    "split file is a folder": (_parquet_is_a_dir, "is a directory|no split 'val'"),
    "no question column": (lambda d, t: _rewrite(d, t / "c", _drop_column("question")),
                           r"lacks column\(s\) question"),
    "no sentence_id column": (lambda d, t: _rewrite(d, t / "c", _drop_column("sentence_id")),
                              r"lacks column\(s\) sentence_id"),
    # (A question without its blank is a quirk of official files: left out, see test_human.py.)
    "question with three blanks": (lambda d, t: _rewrite(d, t / "c", _set("question", "_____ _____ _____")),
                                   "exactly one blank"),
    "question with two blanks": (lambda d, t: _rewrite(d, t / "c", _set("question", "_____ and _____")),
                                 "exactly one blank"),
    "duplicate question id": (lambda d, t: _rewrite(d, t / "c", _duplicate_id), "duplicate question_id"),
    "clip id with '..'": (lambda d, t: _rewrite(d, t / "c", _set("clip_id", "../../etc/passwd")),
                          r"row 0: id '../../etc/passwd' has an empty, '.' or '..' path part"),
    "absolute clip id": (lambda d, t: _rewrite(d, t / "c", _set("clip_id", "/etc/passwd")),
                         "is an absolute path"),
    "NUL in a clip id": (lambda d, t: _rewrite(d, t / "c", _set("clip_id", "1001_A\x00_00.00.01.000-00.00.02.000")),
                         "control character"),
    "control character in a question id": (lambda d, t: _rewrite(d, t / "c", _set("question_id", "q\x1b[31m")),
                                           "control character"),
    "'/' in a question id": (lambda d, t: _rewrite(d, t / "c", _set("question_id", "a/b")), "path separator"),
}


def _one_line_error(capsys, code: int, got: int, pattern: str) -> str:
    import re

    err = capsys.readouterr().err
    assert got == code, err
    lines = [line for line in err.splitlines() if not line.startswith(("WARNING ", "INFO "))]
    assert len(lines) == 1 and lines[0].startswith("moviefib human: error:"), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def _serve(folder: Path, tmp: Path, *extra: str) -> list[str]:
    args = ["human", "serve", str(folder), "--split", "val", "--mode", "text",
            "--answers", str(tmp / "answers.jsonl"), "--port", "0", *extra]
    return args


@pytest.mark.parametrize("case", list(DATASETS))
def test_bad_dataset(dataset, tmp_path, capsys, case):
    make, pattern = DATASETS[case]
    folder = make(dataset, tmp_path)
    _one_line_error(capsys, 3, cli_main(_serve(folder, tmp_path)), pattern)


# --- answer files ------------------------------------------------------------------------------------------

def _line(**changes) -> str:
    return json.dumps(_record(**changes))


ANSWER_FILES = {
    "not JSON": ("not json\n", r"answers.jsonl:1: malformed JSON: Expecting value"),
    "a JSON array": ("[1, 2]\n", "answers.jsonl:1: not a JSON object"),
    "NaN seconds": (_line().replace("1.5", "NaN") + "\n", "answers.jsonl:1: NaN is not a finite number"),
    "Infinity seconds": (_line().replace("1.5", "Infinity") + "\n", "Infinity is not a finite number"),
    "overflowing seconds": (_line().replace("1.5", "1e999") + "\n",
                            r"1e999 \(out of range\) is not a finite number"),
    "10**400 seconds": (_line(seconds=10 ** 400) + "\n", "seconds must be a finite number"),
    "5,000-digit seconds": (_line().replace("1.5", "7" * 5000) + "\n",
                            "answers.jsonl:1: an integer of 5000 digits is not a finite number"),
    "repeated key": (_line().replace('"skipped"', '"mode": "text", "skipped"') + "\n",
                     r"answers.jsonl:1: key 'mode' repeated in one JSON object"),
    "seconds as text": (_line(seconds="2.5") + "\n", "seconds must be a finite number"),
    "seconds true": (_line(seconds=True) + "\n", "seconds must be a finite number"),
    "negative seconds": (_line(seconds=-1) + "\n", "seconds must be a finite number"),
    "skipped as text": (_line(skipped="yes") + "\n", "skipped must be true or false"),
    "missing field": (json.dumps({k: v for k, v in _record().items() if k != "mode"}) + "\n",
                      r"missing field\(s\) mode"),
    "unknown mode": (_line(mode="audio") + "\n", "mode must be one of text, video"),
    "question id a number": (_line(question_id=7) + "\n", "question_id must be a non-empty string"),
    "empty annotator": (_line(annotator="") + "\n", "annotator must be a non-empty string"),
    "answer a list": (_line(answer=["opens"]) + "\n", "answer must be a non-empty string"),
    "skip with an answer": (_line(skipped=True) + "\n", "a skipped question has answer null"),
    "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000 + "\n", "answers.jsonl:1: JSON nested too deeply"),
    "invalid UTF-8": (b'{"question_id": "\xff"}\n', "answers.jsonl:1: invalid UTF-8 at byte 17"),
    "bad line in the middle": (_line() + "\n{oops\n" + _line(question_id="q02") + "\n", "answers.jsonl:2:"),
    "unterminated bad record": (_line() + "\n" + _line(mode="audio"), "answers.jsonl:2: mode must be"),
}


@pytest.mark.parametrize("case", list(ANSWER_FILES))
def test_bad_answer_file(dataset, tmp_path, capsys, case):
    content, pattern = ANSWER_FILES[case]
    answers = tmp_path / "answers.jsonl"
    if isinstance(content, str):
        answers.write_text(content, encoding="utf-8")
    else:
        answers.write_bytes(content)
    before = answers.read_bytes()
    _one_line_error(capsys, 3, cli_main(_serve(dataset, tmp_path)), pattern)
    assert answers.read_bytes() == before  # a refused file is left exactly as it was


def test_answer_file_is_a_directory(dataset, tmp_path, capsys):
    (tmp_path / "answers.jsonl").mkdir()
    _one_line_error(capsys, 3, cli_main(_serve(dataset, tmp_path)), "answers.jsonl: not a regular file")


@pytest.mark.parametrize("under", ["plain", "plain/deeper/still"])
def test_answer_file_under_a_file(dataset, tmp_path, capsys, under):
    """It said "cannot create its folder: File exists", not which path is in the way."""
    (tmp_path / "plain").write_text("x")
    args = _serve(dataset, tmp_path, "--answers", str(tmp_path / under / "answers.jsonl"))
    said = f"answers.jsonl: {tmp_path / 'plain'} is a file, not a folder"
    _one_line_error(capsys, 3, cli_main(args), re.escape(said))


def test_answer_file_unwritable(dataset, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    target = folder / "answers.jsonl"
    if os.access(folder, os.W_OK):  # root writes anywhere; sysfs refuses new files even to root
        target = Path("/sys/moviefib-answers.jsonl")
        try:
            os.close(os.open(target, os.O_RDWR | os.O_CREAT, 0o644))
            pytest.skip("no unwritable place here (running as root, and /sys accepts files)")
        except PermissionError:
            pass
    try:
        args = _serve(dataset, tmp_path, "--answers", str(target))
        _one_line_error(capsys, 3, cli_main(args), "moviefib-answers.jsonl|answers.jsonl: Permission denied")
    finally:
        folder.chmod(0o755)


# --- other settings of `human serve` and `human prepare` ---------------------------------------------------

def _file(tmp: Path) -> Path:
    (tmp / "plain").write_text("x")
    return tmp / "plain"


SETTINGS = {
    "--sample 0": (lambda t, v: ["--sample", "0"], 2, "--sample must be at least 1"),
    "--sample beyond the sentences": (lambda t, v: ["--sample", "7"], 3, "cannot sample 7 .* 6 sentences"),
    "--port 70000": (lambda t, v: ["--port", "70000"], 2, "not a port number"),
    "LAN host without a token": (lambda t, v: ["--host", "0.0.0.0"], 2, "give --token"),
    "video mode without --video-root": (lambda t, v: ["--mode", "video"], 2, "needs --video-root"),
    "missing --video-root": (lambda t, v: ["--mode", "video", "--video-root", str(t / "none")], 3,
                             "no such video folder"),
    "--video-root is a file": (lambda t, v: ["--mode", "video", "--video-root", str(_file(t))], 3,
                               "no such video folder"),
    "--cache-dir is a file": (lambda t, v: ["--mode", "video", "--video-root", str(v), "--cache-dir",
                                            str(_file(t))], 3, "clip cache .* is not a folder"),
    "--cache-dir under a file": (lambda t, v: ["--mode", "video", "--video-root", str(v), "--cache-dir",
                                               str(_file(t) / "cache")], 3,
                                 "cannot create the clip cache .* is a file, not a folder"),
    "no clips under --video-root": (lambda t, v: ["--mode", "video", "--video-root", str(t)], 3,
                                    "12 of 12 questions have no clip"),
    "--duration-tolerance not a number": (lambda t, v: ["--duration-tolerance", "most"], 2,
                                          "--duration-tolerance most"),
    "--duration-tolerance short above warn": (lambda t, v: ["--duration-tolerance", "0.9,0.5"], 2,
                                              "0 < short <= warn <= 1"),
    "--duration-tolerance nan": (lambda t, v: ["--duration-tolerance", "nan"], 2, "expected SHORT"),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_bad_serve_setting(dataset, video_root, tmp_path, capsys, case):
    extra, code, pattern = SETTINGS[case]
    _one_line_error(capsys, code, cli_main(_serve(dataset, tmp_path, *extra(tmp_path, video_root))), pattern)


def test_port_in_use(dataset, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        _one_line_error(capsys, 5, cli_main(_serve(dataset, tmp_path, "--port", port)), "cannot listen on")


def test_host_that_does_not_resolve(dataset, tmp_path, capsys):
    args = _serve(dataset, tmp_path, "--host", "no-such-host.invalid", "--token", "s3cret")
    _one_line_error(capsys, 5, cli_main(args), "cannot listen on no-such-host.invalid")


PREPARE = {
    "missing dataset": (lambda d, t, v: [str(t / "none"), "--video-root", str(v)], 3, "no such dataset"),
    "missing --video-root folder": (lambda d, t, v: [str(d), "--video-root", str(t / "none")], 3,
                                    "no such video folder"),
    "no clips there": (lambda d, t, v: [str(d), "--video-root", str(t)], 3, "have no clip"),
    "--cache-dir is a file": (lambda d, t, v: [str(d), "--video-root", str(v), "--cache-dir", str(_file(t))], 3,
                              "is not a folder"),
    "--sample 0": (lambda d, t, v: [str(d), "--video-root", str(v), "--sample", "0"], 2, "at least 1"),
}


@pytest.mark.parametrize("case", list(PREPARE))
def test_bad_prepare_setting(dataset, video_root, tmp_path, capsys, case):
    extra, code, pattern = PREPARE[case]
    args = ["human", "prepare", "--split", "val", "--no-progress", *extra(dataset, tmp_path, video_root)]
    _one_line_error(capsys, code, cli_main(args), pattern)


def test_prepare_refuses_a_still_image_named_avi(dataset, video_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "videos"
    shutil.copytree(video_root, root)
    victim = next(root.rglob("*.avi"))
    still = tmp_path / "still.png"
    import av
    import numpy as np

    with av.open(str(still), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    victim.write_bytes(still.read_bytes())
    args = ["human", "prepare", str(dataset), "--split", "val", "--video-root", str(root),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert cli_main(args) == 4
    err = capsys.readouterr().err
    assert f"refused: clip {victim.stem}:" in err and "still image" in err and "Traceback" not in err


# --- HTTP requests to the real server ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(dataset, tmp_path_factory):
    from moviefib.human.server import HumanServer, make_app

    answers = tmp_path_factory.mktemp("bad-http") / "answers.jsonl"
    app = make_app(dataset, "val", "text", answers)
    with HumanServer(app, "127.0.0.1", 0) as srv:
        srv.answers = answers
        yield srv


def _request(server, method: str, path: str, body: bytes | None = None,
             content_type: str | None = "application/json", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        hdrs = dict(headers or {})
        if body is not None and content_type:
            hdrs["Content-Type"] = content_type
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def _answer(**changes) -> bytes:
    return json.dumps(_record(**changes)).encode()


REQUESTS = {
    "body not JSON": ("POST", "/api/answer", b"answer=opens", "application/json", 400, "must be a JSON object"),
    "form-encoded": ("POST", "/api/answer", b"answer=opens", "application/x-www-form-urlencoded", 400,
                     "must be a JSON object"),
    "JSON without a JSON content type": ("POST", "/api/answer", _answer(), "text/plain", 400,
                                         "must be a JSON object"),
    "JSON array": ("POST", "/api/answer", b"[1, 2]", "application/json", 400, "must be a JSON object"),
    "empty body": ("POST", "/api/answer", b"", "application/json", 400, "must be a JSON object"),
    "invalid UTF-8": ("POST", "/api/answer", b'{"answer": "\xff"}', "application/json", 400,
                      "must be a JSON object"),
    "nested 30,000 deep": ("POST", "/api/answer", b"[" * 30_000 + b"]" * 30_000, "application/json", 400,
                           "must be a JSON object"),
    "5,000-digit number": ("POST", "/api/answer", _answer().replace(b"1.5", b"9" * 5000), "application/json",
                           400, "must be a JSON object"),
    "NaN seconds": ("POST", "/api/answer", _answer().replace(b"1.5", b"NaN"), "application/json", 400,
                    "must be a JSON object"),
    "overflowing seconds": ("POST", "/api/answer", _answer().replace(b"1.5", b"1e999"), "application/json", 400,
                            "must be a JSON object"),
    "10**400 seconds": ("POST", "/api/answer", _answer(seconds=10 ** 400), "application/json", 400,
                        "seconds must be a number"),
    "seconds as text": ("POST", "/api/answer", _answer(seconds="2.5"), "application/json", 400,
                        "seconds must be a number"),
    "seconds true": ("POST", "/api/answer", _answer(seconds=True), "application/json", 400,
                     "seconds must be a number"),
    "negative seconds": ("POST", "/api/answer", _answer(seconds=-3), "application/json", 400,
                         "seconds must be a number"),
    "skipped as text": ("POST", "/api/answer", _answer(skipped="yes"), "application/json", 400,
                        "skipped must be true or false"),
    "answer a list": ("POST", "/api/answer", _answer(answer=["opens"]), "application/json", 400,
                      "must be text"),
    "answer a number": ("POST", "/api/answer", _answer(answer=7), "application/json", 400, "must be text"),
    "annotator a number": ("POST", "/api/answer", _answer(annotator=7), "application/json", 400,
                           "annotator id first"),
    "annotator with spaces": ("POST", "/api/answer", _answer(annotator="a b"), "application/json", 400,
                              "annotator id is 1 to 40"),
    "unknown question": ("POST", "/api/answer", _answer(question_id="q99"), "application/json", 400,
                         "Unknown question"),
    "question id a list": ("POST", "/api/answer", _answer(question_id=["q00"]), "application/json", 400,
                           "Unknown question"),
    "question id with '..'": ("POST", "/api/answer", _answer(question_id="../q00"), "application/json", 400,
                              "Unknown question"),
    "body over 64 KB": ("POST", "/api/answer", _answer(answer="x" * 100_000), "application/json", 413,
                        "too large .at most 64 KB"),
    "GET on the answer endpoint": ("GET", "/api/answer", None, None, 405, "Method Not Allowed"),
    "unknown path": ("GET", "/api/nothing", None, None, 404, "Not Found"),
    "next without annotator": ("GET", "/api/next", None, None, 400, "annotator id first"),
    "next with a script as annotator": ("GET", "/api/next?annotator=%3Cscript%3E", None, None, 400,
                                        "annotator id is 1 to 40"),
    "clip in text mode": ("GET", "/clip/q00", None, None, 404, "Not Found"),
    "clip id with '..'": ("GET", "/clip/..%2F..%2Fetc%2Fpasswd", None, None, 404, "Not Found"),
    "static file outside static/": ("GET", "/static/..%2Fanswers.py", None, None, 404, "Not Found"),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_bad_request(server, case):
    method, path, body, ctype, code, pattern = REQUESTS[case]
    import re

    before = server.answers.read_bytes()
    status, got_type, data = _request(server, method, path, body, ctype)
    assert status == code, data[:300]
    assert got_type.startswith("application/json"), (got_type, data[:300])
    assert re.search(pattern, json.loads(data)["error"])
    assert server.answers.read_bytes() == before  # nothing refused is written


def test_foreign_host_header_is_refused(server):
    status, _, data = _request(server, "GET", "/api/config", headers={"Host": "evil.example"})
    assert status == 403 and b"localhost" in data


def test_the_server_still_records_a_good_answer_after_the_bad_ones(server):
    status, _, data = _request(server, "POST", "/api/answer", _answer(annotator="last"))
    assert status == 200, data
    assert [(r.annotator, r.question_id) for r in read_answers(server.answers)][-1] == ("last", "q00")


@pytest.mark.parametrize("host,status", [("[::1]", 200), ("[::1]:8000", 200), ("localhost", 200),
                                         ("[::1].evil.example", 403), ("[::1]x:80", 403), ("[::2]", 403)])
def test_host_header_of_ipv6_loopback(server, host, status):
    # Werkzeug drops a default port: "[::1]" cut at its last colon was "[:", refused as foreign.
    got, _, data = _request(server, "GET", "/api/config", headers={"Host": host})
    assert got == status, data[:200]
