"""TensorBoard logs of a run (train.log_dir): the scalars read back with tensorboard's own reader, a
resumed run continuing them, and the one-line refusal (exit 5) when the extra is not installed."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.training import tensorboard as tb  # noqa: E402
from moviefib.training.config import load_config  # noqa: E402

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
needs_tensorboard = pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard not installed "
                                       "(pip install 'moviefib[tensorboard]')")


def _tables(n=36):
    words = [f"w{i}" for i in range(10)]
    qs = [f"{words[i % 10]} {words[(i * 3) % 10]} _____ {words[(i * 7) % 10]}" for i in range(n)]
    table = pa.table({"question_id": [f"q{i}" for i in range(n)], "clip_id": ["c"] * n, "question": qs,
                      "answer": [words[i % 3] for i in range(n)]})
    return {"train": table, "val": table}


def _config(tmp_path, *overrides):
    return load_config("text_only", ["model.emb_dim=8", "model.hidden=8", "train.batch_size=12", "train.threads=1",
                                     f"train.out_dir={json.dumps(str(tmp_path / 'run'))}", *overrides])


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@needs_tensorboard
def test_epochs_are_logged_as_scalars(tmp_path):
    from moviefib.train import train

    log_dir = tmp_path / "tb"
    res = train(_config(tmp_path, "train.epochs=2", f"train.log_dir={json.dumps(str(log_dir))}"), tables=_tables())
    scalars = _scalars(log_dir)
    assert set(scalars) == {tag for _, tag in tb.SCALARS}
    for key, tag in tb.SCALARS:
        want = [(h["epoch"], h[key]) for h in res.metrics["history"]]
        assert [s for s, _ in scalars[tag]] == [1, 2]
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in want], rel=1e-6)


@needs_tensorboard
def test_a_resumed_run_continues_its_log(tmp_path):
    from moviefib.train import train

    log_dir = json.dumps(str(tmp_path / "tb"))
    train(_config(tmp_path, "train.epochs=1", f"train.log_dir={log_dir}"), tables=_tables())
    last = json.dumps(str(tmp_path / "run" / "last.pt"))
    res = train(_config(tmp_path, "train.epochs=3", f"train.log_dir={log_dir}", f"train.resume={last}"),
                tables=_tables())
    val = _scalars(tmp_path / "tb")["val/accuracy"]
    assert [s for s, _ in val] == [1, 2, 3]
    assert [v for _, v in val] == pytest.approx([h["val_acc"] for h in res.metrics["history"]], rel=1e-6)


def test_no_log_dir_writes_no_events(tmp_path):
    from moviefib.train import train

    train(_config(tmp_path, "train.epochs=1"), tables=_tables())
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def _without_tensorboard(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))


def test_without_the_extra_the_run_is_refused_before_any_work(tmp_path, monkeypatch):
    from moviefib.train import train

    _without_tensorboard(monkeypatch)
    cfg = _config(tmp_path, f"train.log_dir={json.dumps(str(tmp_path / 'tb'))}",
                  f"data.dataset={json.dumps(str(tmp_path / 'nowhere'))}")
    with pytest.raises(tb.TensorBoardUnavailableError, match=r"pip install 'moviefib\[tensorboard\]'"):
        train(cfg)  # the dataset is not read: it does not exist
    assert not (tmp_path / "tb").exists()


def test_cli_exits_5_naming_the_extra(tmp_path, monkeypatch, capsys):
    _without_tensorboard(monkeypatch)
    code = cli_main(["train", "text_only", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
                     "--set", f"train.log_dir={json.dumps(str(tmp_path / 'tb'))}"])
    err = capsys.readouterr().err
    assert code == 5
    assert "train.log_dir" in err and "moviefib[tensorboard]" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
