"""Zoneout (Krueger et al. 2016) in the baselines' LSTMs: the expectation at evaluation, the limits
p = 0 and p = 1, units kept per unit and step, padded steps, gradients, and settings."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from moviefib.models import create_model, make_settings  # noqa: E402
from moviefib.models.lstm import SeqLSTM  # noqa: E402
from moviefib.training.config import ConfigError, load_config  # noqa: E402

D, H = 5, 4


def _pair(batch_norm: bool, *, cell: float, hidden: float) -> tuple[SeqLSTM, SeqLSTM]:
    """A zoneout LSTM and a plain one with the same weights."""
    torch.manual_seed(0)
    plain = SeqLSTM(D, H, batch_norm=batch_norm)
    zoned = SeqLSTM(D, H, batch_norm=batch_norm, zoneout_cell=cell, zoneout_hidden=hidden)
    zoned.load_state_dict(plain.state_dict())
    return zoned, plain


def _inputs(b=3, t=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, D, generator=g)
    state = (torch.randn(b, H, generator=g), torch.randn(b, H, generator=g))
    return x, state


@pytest.mark.parametrize("batch_norm", [False, True])
def test_eval_takes_the_expectation(batch_norm):
    """At evaluation each step is ``p * previous + (1 - p) * new``, ``new`` from the plain cell."""
    pc, ph = 0.3, 0.6
    zoned, plain = _pair(batch_norm, cell=pc, hidden=ph)
    zoned.eval(), plain.eval()
    x, (h, c) = _inputs()
    one = torch.ones(x.shape[0], dtype=torch.long)
    with torch.no_grad():
        got_h, got_c = zoned(x, torch.full((x.shape[0],), x.shape[1]), (h, c))
        for t in range(x.shape[1]):  # batch norm at eval: every step has the same (initial) statistics
            h_new, c_new = plain(x[:, t:t + 1], one, (h, c))
            h, c = ph * h + (1 - ph) * h_new, pc * c + (1 - pc) * c_new
    torch.testing.assert_close(got_h, h)
    torch.testing.assert_close(got_c, c)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_p_one_keeps_the_initial_state(batch_norm, training):
    zoned, _ = _pair(batch_norm, cell=1.0, hidden=1.0)
    zoned.train(training)
    x, state = _inputs()
    h, c = zoned(x, torch.full((x.shape[0],), x.shape[1]), state)
    assert torch.equal(h, state[0]) and torch.equal(c, state[1])


def test_step_loop_at_p_zero_equals_the_fused_lstm():
    """The loop plain mode runs under zoneout is nn.LSTM's cell: at p = 0 it gives nn.LSTM's result."""
    _, plain = _pair(False, cell=0.0, hidden=0.0)
    x, state = _inputs()
    lengths = torch.tensor([4, 2, 1])
    fused = plain(x, lengths, state)
    wx = torch.nn.functional.linear(x, plain.lstm.weight_ih_l0, plain.lstm.bias_ih_l0 + plain.lstm.bias_hh_l0)
    looped = plain._step_loop(wx, lengths, state, plain._plain_cell)
    torch.testing.assert_close(looped, fused)


def _old_bn_forward(m: SeqLSTM, x, lengths):
    """Recurrent batch norm as written before zoneout existed: the oracle of 'p = 0 changes nothing'."""
    b, t_max, _ = x.shape
    h, c = x.new_zeros(b, m.hidden), x.new_zeros(b, m.hidden)
    wx = m.w_ih(x)
    valid = torch.arange(t_max).unsqueeze(0) < lengths.unsqueeze(1)
    rows = valid.sum(0).tolist()
    for t in range(t_max):
        mt, n = valid[:, t], rows[t]
        gates = m.bn_ih(wx[:, t], t, mt, n) + m.bn_hh(m.w_hh(h), t, mt, n) + m.bias
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(m.bn_c(c_new, t, mt, n))
        h, c = torch.where(mt.unsqueeze(1), h_new, h), torch.where(mt.unsqueeze(1), c_new, c)
    return h, c


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_at_p_zero_is_unchanged(training):
    torch.manual_seed(0)
    a, b = SeqLSTM(D, H, batch_norm=True), SeqLSTM(D, H, batch_norm=True)
    b.load_state_dict(a.state_dict())
    a.train(training), b.train(training)
    x, _ = _inputs(b=12, t=3)
    lengths = torch.tensor([3, 3, 2, 1] * 3)
    got, want = a(x, lengths), _old_bn_forward(b, x, lengths)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(a.bn_ih.running_mean, b.bn_ih.running_mean)


@pytest.mark.parametrize("name", ["text_only", "text_2d3d"])
def test_default_model_outputs_are_unchanged(name):
    """Zoneout 0 (the default, and what old recipes and checkpoints mean) is the model without it."""
    kw = {"n_answers": 7, "vocab_size": 30, "video_dims": {"2d": 6, "3d": 10}, "emb_dim": 8, "hidden": 6}
    torch.manual_seed(0)
    default = create_model(name, **kw)
    explicit = create_model(name, **kw, zoneout_cell=0.0, zoneout_hidden=0.0)
    explicit.load_state_dict(default.state_dict())
    assert not any(m.zoneout for m in default.modules() if isinstance(m, SeqLSTM))
    g = torch.Generator().manual_seed(0)
    batch = {"left": torch.randint(1, 30, (4, 5), generator=g), "left_len": torch.tensor([5, 3, 2, 1]),
             "right": torch.randint(1, 30, (4, 3), generator=g), "right_len": torch.tensor([3, 1, 2, 3]),
             "video": torch.randn(4, 2, 16, generator=g), "video_len": torch.tensor([2, 1, 2, 2])}
    default.eval(), explicit.eval()
    assert torch.equal(default(batch), explicit(batch))


def test_training_keeps_units_one_by_one():
    """A mask per unit (not per sequence or step): at p = 0.5 about half of the units keep their
    previous value exactly after one step, and two draws differ."""
    zoned, _ = _pair(False, cell=0.5, hidden=0.5)
    zoned.train()
    x, _ = _inputs(b=200, t=1)
    state = (torch.full((200, H), 7.0), torch.full((200, H), 7.0))  # a value no LSTM step produces
    torch.manual_seed(3)
    h1, c1 = zoned(x, torch.ones(200, dtype=torch.long), state)
    h2, _ = zoned(x, torch.ones(200, dtype=torch.long), state)
    for kept in ((h1 == 7.0).float().mean(), (c1 == 7.0).float().mean()):
        assert 0.4 < float(kept) < 0.6
    assert not torch.equal(h1, h2)
    assert ((h1 == 7.0).any(1) & (h1 != 7.0).any(1)).any()  # kept and updated units in one row


@pytest.mark.parametrize("batch_norm", [False, True])
def test_padded_steps_keep_the_state(batch_norm):
    zoned, _ = _pair(batch_norm, cell=0.2, hidden=0.4)
    zoned.eval()
    x, state = _inputs(b=2, t=4)
    with torch.no_grad():
        padded = zoned(x, torch.tensor([4, 2]), state)
        short = zoned(x[1:, :2], torch.tensor([2]), (state[0][1:], state[1][1:]))
    torch.testing.assert_close(padded[0][1:], short[0])
    torch.testing.assert_close(padded[1][1:], short[1])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_gradients_flow_through_zoneout(batch_norm):
    torch.manual_seed(0)
    model = create_model("text_2d3d", n_answers=5, vocab_size=30, video_dims={"2d": 6, "3d": 10}, emb_dim=8,
                         hidden=6, batch_norm=batch_norm, zoneout_cell=0.3, zoneout_hidden=0.3)
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = {"left": torch.randint(1, 30, (12, 5), generator=g), "left_len": torch.tensor([5, 3, 2, 1] * 3),
             "right": torch.randint(1, 30, (12, 3), generator=g), "right_len": torch.tensor([3, 1, 2] * 4),
             "video": torch.randn(12, 2, 16, generator=g), "video_len": torch.tensor([2, 1] * 6)}
    torch.nn.functional.cross_entropy(model(batch), torch.arange(12) % 5).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


def test_settings_take_zoneout_and_refuse_bad_values(tmp_path):
    assert make_settings("text_only", {}).zoneout_cell == 0.0
    cfg = load_config("text_only", ["model.zoneout_cell=0.05", "model.zoneout_hidden=0.15"])
    assert (cfg.model.settings.zoneout_cell, cfg.model.settings.zoneout_hidden) == (0.05, 0.15)
    with pytest.raises(ConfigError, match=r"model.zoneout_hidden = 1.5: expected a probability in \[0, 1\)"):
        load_config("text_only", ["model.zoneout_hidden=1.5"])
    with pytest.raises(ValueError, match="zoneout_cell must be in"):
        SeqLSTM(D, H, zoneout_cell=-0.1)
