"""The batch-size rule, the warm-up and the decay (moviefib.training.schedule), their config keys, and
what a run records of them."""

from __future__ import annotations

import json
import math

import pytest

from moviefib.training.config import ConfigError, TrainSection, config_from_dict, load_config
from moviefib.training.schedule import (
    decay_factor,
    effective_lr,
    scale_factor,
    schedule_step,
    warmup_factor,
    warmup_steps,
)


def _train(**kw) -> TrainSection:
    return load_config(None, [f"train.{k}={json.dumps(v)}" for k, v in kw.items()]).train


def test_default_is_no_scaling():
    cfg = TrainSection()
    assert (cfg.lr_scaling, cfg.lr_reference_batch, cfg.warmup_epochs) == ("none", 24, 0.0)
    rates = effective_lr(_train(batch_size=192, lr=2e-4, head_lr=1e-3))
    assert (rates.factor, rates.lr, rates.head_lr) == (1.0, 2e-4, 1e-3)


@pytest.mark.parametrize(("scaling", "factor"), [("linear", 8.0), ("sqrt", math.sqrt(8.0)), ("none", 1.0)])
def test_scaling_multiplies_lr_and_head_lr(scaling, factor):
    rates = effective_lr(_train(batch_size=192, lr=2e-4, head_lr=1e-3, lr_scaling=scaling))
    assert rates.factor == pytest.approx(factor)
    assert rates.lr == pytest.approx(2e-4 * factor) and rates.head_lr == pytest.approx(1e-3 * factor)
    assert rates.as_dict()["scaling"] == scaling


def test_reference_batch_is_what_the_ratio_is_taken_against():
    assert scale_factor("linear", batch=64, reference=64) == 1.0
    assert effective_lr(_train(batch_size=32, lr_scaling="linear", lr_reference_batch=128)).lr == pytest.approx(5e-5)


def test_bad_values_name_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"train.lr_scaling = 'cubic': expected one of 'none', 'linear', 'sqrt'"):
        load_config(None, ["train.lr_scaling=cubic"])
    with pytest.raises(ConfigError, match=r"train.lr_reference_batch = 0: expected an integer >= 1"):
        load_config(None, ["train.lr_reference_batch=0"])
    with pytest.raises(ConfigError, match=r"train.warmup_epochs = -1: expected a number >= 0"):
        load_config(None, ["train.warmup_epochs=-1"])
    # A valid lr the rule would multiply past what Adam's float32 state holds.
    with pytest.raises(ConfigError, match=r"override 'train.lr_scaling=linear': .* makes the learning rate 8000"):
        load_config(None, ["train.lr=1000", "train.batch_size=192", "train.lr_scaling=linear"])


    with pytest.raises(ConfigError, match=r"train.lr_decay = 'cosine': expected one of 'none', 'linear'"):
        load_config(None, ["train.lr_decay=cosine"])
    with pytest.raises(ConfigError, match=r"train.adam_beta2 = 1: expected a number >= 0 and < 1"):
        load_config(None, ["train.adam_beta2=1"])


def test_a_saved_config_without_the_keys_reads_as_before():
    cfg = config_from_dict({"model": {"name": "text_only"}, "train": {"lr": 1e-3, "batch_size": 64}})
    assert cfg.train.lr_scaling == "none" and effective_lr(cfg.train).lr == 1e-3
    assert (cfg.train.lr_decay, cfg.train.adam_beta2) == ("none", 0.999)


def test_warmup_ramps_linearly_then_holds():
    assert warmup_steps(_train(warmup_epochs=0.5), 10) == 5
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_linear_decay_falls_from_the_end_of_the_warm_up_to_zero_past_the_last_step():
    """FrozenBiLM's linear_with_warmup: (N - s) / (N - W) after W warm-up steps of N."""
    assert [decay_factor(s, warmup=2, total=6) for s in range(7)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert [decay_factor(s, warmup=0, total=4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert decay_factor(9, warmup=0, total=4) == 0.0  # never negative (a run resumed with fewer epochs)


class _Optimizer:
    def __init__(self, *rates):
        self.param_groups = [{"lr": r} for r in rates]


def test_the_warm_up_sets_both_groups_from_the_effective_rates():
    cfg = _train(batch_size=48, lr=1e-3, head_lr=2e-3, lr_scaling="linear", warmup_epochs=1)
    opt = _Optimizer(0.0, 0.0)
    schedule_step(opt, cfg, step=0, steps_per_epoch=4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-3 / 4, 4e-3 / 4])
    schedule_step(opt, cfg, step=9, steps_per_epoch=4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-3, 4e-3])


def test_warm_up_then_decay_over_the_run():
    """2 epochs of 4 steps, 1 of warm-up: the ramp, then (8 - s) / 4 of the full rate."""
    cfg = _train(lr=1e-3, head_lr=2e-3, epochs=2, warmup_epochs=1, lr_decay="linear")
    opt = _Optimizer(0.0, 0.0)
    rates = []
    for step in range(8):
        schedule_step(opt, cfg, step=step, steps_per_epoch=4)
        rates.append([g["lr"] / r for g, r in zip(opt.param_groups, (1e-3, 2e-3))])
    assert [r[0] for r in rates] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25])
    assert [r[1] for r in rates] == pytest.approx([r[0] for r in rates])
    schedule_step(opt, _train(lr=1e-3, epochs=2, lr_decay="linear"), step=0, steps_per_epoch=4)  # no warm-up
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_no_schedule_leaves_the_rates_alone():
    """Without a warm-up the optimiser's rates are not touched (make_engine and a resume set them)."""
    opt = _Optimizer(0.123, 0.456)
    schedule_step(opt, _train(lr_scaling="linear", batch_size=48), step=0, steps_per_epoch=4)
    assert [g["lr"] for g in opt.param_groups] == [0.123, 0.456]


def _tables(n=48):
    pa = pytest.importorskip("pyarrow")
    words = [f"w{i}" for i in range(12)]
    qs = [f"{words[i % 12]} {words[(i * 5) % 12]} _____ {words[(i * 7) % 12]}" for i in range(n)]
    table = pa.table({"question_id": [f"q{i}" for i in range(n)], "clip_id": ["c"] * n, "question": qs,
                      "answer": [words[i % 4] for i in range(n)]})
    return {"train": table, "val": table}


def _run(tmp_path, name, *overrides):
    from moviefib.train import load_config as load
    from moviefib.train import train

    cfg = load("text_only", ["model.emb_dim=8", "model.hidden=8", "train.epochs=2", "train.batch_size=12",
                             "train.threads=1", f"train.out_dir={json.dumps(str(tmp_path / name))}", *overrides])
    return train(cfg, tables=_tables())


def test_a_run_records_the_effective_rate_and_warms_up(tmp_path):
    pytest.importorskip("torch")
    res = _run(tmp_path, "warm", "train.lr=1e-3", "train.lr_scaling=linear", "train.lr_reference_batch=24",
               "train.warmup_epochs=1.5")
    saved = json.loads((tmp_path / "warm" / "metrics.json").read_text())
    assert saved["lr"] == {"scaling": "linear", "factor": 0.5, "lr": 5e-4, "head_lr": 5e-4}
    # 4 steps an epoch, 6 steps of warm-up: epoch 1 ends at step 4 of 6, epoch 2 past the warm-up.
    assert [h["lr"] for h in res.metrics["history"]] == pytest.approx([5e-4 * 4 / 6, 5e-4])


def test_a_run_records_the_decayed_rate_and_a_resumed_run_decays_over_its_own_epochs(tmp_path):
    """3 epochs of 4 steps, decayed: each epoch's last step at (12 - s) / 12. A 2-epoch run resumed
    with train.epochs = 3 takes its third epoch at the rate of the 3-epoch schedule."""
    pytest.importorskip("torch")
    decayed = ("train.lr=1e-3", "train.lr_decay=linear", "train.patience=9")
    whole = _run(tmp_path, "whole", *decayed, "train.epochs=3")
    assert [h["lr"] for h in whole.metrics["history"]] == pytest.approx([1e-3 * 9 / 12, 1e-3 * 5 / 12, 1e-3 / 12])
    part = _run(tmp_path, "part", *decayed)
    assert [h["lr"] for h in part.metrics["history"]] == pytest.approx([1e-3 * 5 / 8, 1e-3 / 8])
    last = json.dumps(str(tmp_path / "part" / "last.pt"))
    resumed = _run(tmp_path, "part", *decayed, "train.epochs=3", f"train.resume={last}")
    assert resumed.metrics["history"][-1]["lr"] == pytest.approx(1e-3 / 12)


def test_default_rule_trains_exactly_as_before(tmp_path):
    """lr_scaling "none" (the default) and a run that never heard of it take the same steps."""
    pytest.importorskip("torch")
    default = _run(tmp_path, "default")
    explicit = _run(tmp_path, "explicit", "train.lr_scaling=none", "train.lr_reference_batch=7")
    losses = [[h["train_loss"] for h in r.metrics["history"]] for r in (default, explicit)]
    assert losses[0] == losses[1]
    assert [h["lr"] for h in default.metrics["history"]] == [2e-4, 2e-4]


def test_the_optimiser_gets_the_effective_rates():
    torch = pytest.importorskip("torch")
    from moviefib.distributed import DistributedEnv
    from moviefib.training.loop import make_engine

    model = torch.nn.ModuleDict({"body": torch.nn.Linear(2, 2), "classifier": torch.nn.Linear(2, 2)})
    env = DistributedEnv(0, 1, 0)
    for overrides, want in (((), [2e-4, 1e-3]), (("train.lr_scaling=sqrt", "train.batch_size=96"), [4e-4, 2e-3])):
        cfg = load_config(None, ["train.head_lr=1e-3", *overrides]).train
        engine = make_engine(model, cfg, env=env, device=torch.device("cpu"))
        assert [g["lr"] for g in engine.optimizer.param_groups] == pytest.approx(want)
        assert len(engine.optimizer.param_groups[1]["params"]) == 2  # the classifier's weight and bias
