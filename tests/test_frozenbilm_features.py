"""FrozenBiLM's features: the ``frozenbilm_clip`` preset (CLIP ViT-L/14 at 1 frame/s, built here at random
from a tiny config: no CLIP weights offline), and ``features export-frozenbilm / import-frozenbilm``
between a store and FrozenBiLM's feature file (a torch dict of clip id -> float16 [T, D]).
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from moviefib.cli import main  # noqa: E402
from moviefib.features.frozenbilm import TIMESTAMP_RULE  # noqa: E402
from moviefib.features.presets import get_preset  # noqa: E402
from moviefib.features.store import open_store, write_store  # noqa: E402
from moviefib.video import FpsFilter, sample, write_synthetic_video  # noqa: E402

# A ViT small enough to run in milliseconds; the projection stays 768-d, the record's size.
TINY = {"patch_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2}
CLIPS = ("1004_Juno_00.00.32.849-00.00.35.458", "1004_Juno_00.00.36.000-00.00.37.100",
         "3011_BLIND_DATING_01.02.03.000-01.02.09.500")


def _tiny_clip():
    pytest.importorskip("transformers", reason="clip_vitl14 needs the optional 'transformers' package")
    from moviefib.features.registry import create_extractor

    return create_extractor("clip_vitl14", weights=None, config=TINY)


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- the preset


def test_the_preset_is_clip_vitl14_at_one_frame_per_second(tmp_path):
    preset = get_preset("frozenbilm_clip")
    assert (preset.extractor, preset.dim, preset.kind, preset.decode_short_side) == ("clip_vitl14", 768, "2d", 224)
    assert preset.sampling == FpsFilter(1.0)
    # On decoded frames, as FFmpeg's fps=1 filter: second i is the frame on screen at i + 0.5 s, round(d) of them.
    video = write_synthetic_video(tmp_path / "v.mkv", 80, fps=25)  # 3.2 s; frame i has red = i
    steps = [(info.time, int(frames[0, 0, 0, 0]), frames.shape[0]) for info, frames in sample(video, preset.sampling)]
    assert steps == [(0.0, 12, 1), (1.0, 37, 1), (2.0, 62, 1)]


def test_the_preset_builds_at_random_as_frozenbilm_preprocesses():
    ex = _tiny_clip()
    assert (ex.name, ex.kind, ex.dim) == ("clip_vitl14", "2d", 768)
    pre = ex.preprocess
    assert (pre.resize, pre.crop_size, pre.interpolation, pre.scale) == (224, (224, 224), "bicubic", 1 / 255)
    assert pre.mean == (0.48145466, 0.4578275, 0.40821073) and pre.std == (0.26862954, 0.26130258, 0.27577711)
    assert ex.provenance["layer"] == "image_embeds (projected pooled output, not L2-normalised)"
    with torch.no_grad():
        out = ex.model(pre(torch.randint(0, 256, (3, 240, 320, 3), dtype=torch.uint8)))
    assert out.shape == (3, 768) and torch.isfinite(out).all()
    # Not L2-normalised, as FrozenBiLM's extraction (--l2_normalize 0) leaves encode_image's output.
    assert not torch.allclose(out.norm(dim=1), torch.ones(3))


def test_the_random_architecture_is_vit_l14():
    pytest.importorskip("transformers")
    from transformers import CLIPVisionConfig

    from moviefib.features.models_2d import _VITL14_ARCHITECTURE

    # The vision_config of openai/clip-vit-large-patch14's config.json, and its projection_dim.
    config = CLIPVisionConfig(**_VITL14_ARCHITECTURE)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_attention_heads,
            config.patch_size, config.image_size, config.projection_dim) == (1024, 4096, 24, 16, 14, 224, 768)


def test_offline_the_pretrained_preset_fails_in_one_line(tmp_path, capsys):
    pytest.importorskip("transformers")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("openai/clip-vit-large-patch14", "config.json"), str):
        pytest.skip("CLIP ViT-L/14 is in this machine's Hugging Face cache")
    folder = tmp_path / "videos"
    folder.mkdir()
    write_synthetic_video(folder / "a.mkv", 30)
    code, _, err = _cli(["extract", "--preset", "frozenbilm_clip", "--folder", folder, "-o", tmp_path / "o.h5",
                         "--no-progress"], capsys)
    assert code == 5 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "clip_vitl14: cannot load openai/clip-vit-large-patch14" in err and "--weights none" in err
    assert not (tmp_path / "o.h5").exists()


# ---------------------------------------------------------------- round trips


def test_an_extracted_store_round_trips_through_frozenbilms_file(tmp_path, capsys):
    from moviefib.features.pipeline import clips_from_folder, extract

    folder = tmp_path / "videos"
    folder.mkdir()
    for name, frames in zip(CLIPS, (70, 30, 126)):  # 2.8 s, 1.2 s, 5.04 s at 25 fps
        write_synthetic_video(folder / f"{name}.mkv", frames)
    preset = get_preset("frozenbilm_clip")
    store = tmp_path / "frozenbilm_clip.h5"
    summary = extract(clips_from_folder(folder), store, _tiny_clip(), preset.sampling, preset=preset.name,
                      num_workers=0, short_side=preset.decode_short_side)
    assert summary.extracted == 3 and summary.failed == 0
    with open_store(store) as s:
        made = {c: s.get(c) for c in s.clip_ids()}
        assert s.provenance["preset"] == "frozenbilm_clip"
    assert {c: len(f.features) for c, f in made.items()} == dict(zip(CLIPS, (3, 1, 5)))  # round(d)
    assert list(made[CLIPS[2]].timestamps) == [0.0, 1.0, 2.0, 3.0, 4.0]

    out = tmp_path / "clipvitl14.pth"
    code, said, err = _cli(["features", "export-frozenbilm", store, out], capsys)
    assert code == 0, err
    assert said.strip() == f"{out}: 3 clips, 9 rows of 768-d float16 features"
    loaded = torch.load(out, weights_only=True)  # what FrozenBiLM's dataset does (th.load)
    assert type(loaded) is dict and list(loaded) == list(made)
    for clip, feats in made.items():
        got = loaded[clip]
        assert got.dtype == torch.float16 and got.shape == (len(feats.features), 768) and got.is_contiguous()
        assert np.array_equal(got.numpy(), feats.features)

    back = tmp_path / "back.h5"
    code, said, err = _cli(["features", "import-frozenbilm", out, back], capsys)
    assert code == 0, err
    assert said.strip() == f"{back}: 3 clips imported (768-d, preset frozenbilm_clip)"
    with open_store(back) as s:
        assert s.clip_ids() == list(made)
        for clip, feats in made.items():
            got = s.get(clip)
            assert np.array_equal(got.features, feats.features)
            assert np.array_equal(got.timestamps, feats.timestamps)  # the import's rule is the preset's
        prov = s.provenance
    assert prov["preset"] == "frozenbilm_clip" and prov["extractor"] == "clip_vitl14" and prov["kind"] == "2d"
    assert prov["imported_from"] == f"FrozenBiLM feature file ({out})" and prov["timestamps"] == TIMESTAMP_RULE


def test_a_file_made_as_frozenbilms_merge_features_imports(tmp_path, capsys):
    # extract.py saves one float16 [T, 768] .npy per clip file (<clip>.avi.npy); merge_features.py keys
    # each by its file name less ".avi.npy" and saves the dict of float16 tensors with torch.save.
    rng = np.random.default_rng(0)
    per_clip = tmp_path / "features"
    per_clip.mkdir()
    for name, rows in zip(CLIPS, (3, 1, 7)):
        np.save(per_clip / f"{name}.avi.npy", rng.standard_normal((rows, 768)).astype("float32").astype("float16"))
    merged = {}
    for file in sorted(os.listdir(per_clip)):
        merged[file[: -len(".avi.npy")]] = torch.from_numpy(np.load(per_clip / file)).half()
    pth = tmp_path / "clipvitl14.pth"
    torch.save(merged, pth)

    out = tmp_path / "lsmdc.h5"
    code, _, err = _cli(["features", "import-frozenbilm", pth, out], capsys)
    assert code == 0, err
    with open_store(out) as s:
        assert sorted(s.clip_ids()) == sorted(CLIPS)
        for name in CLIPS:
            got = s.get(name)
            assert np.array_equal(got.features, np.load(per_clip / f"{name}.avi.npy"))
            assert got.timestamps[0] == 0.0 and np.all(np.diff(got.timestamps) == 1.0)


def test_empty_clips_are_left_out_when_told(tmp_path, capsys):
    pth = tmp_path / "f.pth"
    torch.save({"a": torch.ones(2, 768, dtype=torch.float16), "short": torch.zeros(0, 768, dtype=torch.float16)},
               pth)
    code, said, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5", "--skip-empty"], capsys)
    assert code == 0, err
    assert "1 clips imported" in said and "1 empty clips left out (short)" in said
    with open_store(tmp_path / "o.h5") as s:
        assert s.clip_ids() == ["a"]


def test_wider_floats_are_stored_as_float16_and_another_preset_is_recorded(tmp_path, capsys):
    pth = tmp_path / "f.pth"
    feats = torch.linspace(-2, 2, 3 * 1024, dtype=torch.float64).reshape(3, 1024)
    torch.save({"a": feats, "b": feats[:1].to(torch.bfloat16)}, pth)
    # efficientnet_lite0 makes 1280-d features: a 1024-d file is not its.
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5", "--preset", "efficientnet_lite0"],
                        capsys)
    assert code == 3 and "clip a: 1024-d features, but preset efficientnet_lite0 makes 1280-d ones" in err
    wide = {"a": torch.linspace(-2, 2, 3 * 1280, dtype=torch.float64).reshape(3, 1280)}
    torch.save(wide, pth)
    assert _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5", "--preset", "efficientnet_lite0"],
                capsys)[0] == 0
    with open_store(tmp_path / "o.h5") as s:
        assert s.provenance["preset"] == "efficientnet_lite0"
        assert np.array_equal(s.get("a").features, wide["a"].numpy().astype(np.float16))


# ---------------------------------------------------------------- bad inputs, through the CLI


class _Thing:  # pickled by reference: weights_only=True must refuse to build it
    pass


def _cut_torch_file(p):
    torch.save({"a": torch.ones(40, 768)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _features(**clips):
    return lambda p: torch.save(clips, p)


def _ok(rows=2, dim=768):
    return torch.ones(rows, dim, dtype=torch.float16)


def _with(row, value):
    t = torch.ones(3, 768)
    t[row, 5] = value
    return t


BAD_FILES = [
    ("random-bytes", lambda p: p.write_bytes(os.urandom(64)), "not a file torch.load reads with weights_only=True"),
    ("text-file", lambda p: p.write_text("video_id,feature\n"), "not a file torch.load reads with weights_only=True"),
    ("empty-file", lambda p: p.write_bytes(b""), "not a file torch.load reads with weights_only=True (EOFError"),
    ("cut-torch-file", _cut_torch_file, "not a file torch.load reads with weights_only=True"),
    ("a-list", lambda p: torch.save([_ok()], p), "holds a list, not a dict of clip id -> features"),
    ("a-tensor", lambda p: torch.save(_ok(), p), "holds a Tensor, not a dict"),
    ("empty-dict", lambda p: torch.save({}, p), "an empty dict, no clip to import"),
    ("int-key", lambda p: torch.save({7: _ok()}, p), "key 7 is of type int, not a clip id string"),
    ("key-leaving-the-tree", _features(**{"../x": _ok()}), "clip '../x': id '../x' has an empty, '.' or '..' path"),
    ("numpy-value", lambda p: torch.save({"a": np.ones((2, 768))}, p), "which weights_only=True does not load"),
    ("object-value", lambda p: torch.save({"a": _Thing()}, p), "_Thing, which weights_only=True does not load"),
    ("list-value", _features(a=_ok(), b=[[0.5] * 768]), "clip b: a list, not a tensor of features"),
    ("int-tensor", _features(a=torch.ones(2, 768, dtype=torch.int64)), "clip a: features of dtype torch.int64"),
    ("rank-1", _features(a=torch.ones(768)), "clip a: features of shape [768], expected [T, D]"),
    ("rank-3", _features(a=torch.ones(1, 2, 768)), "clip a: features of shape [1, 2, 768], expected [T, D]"),
    ("no-width", _features(a=torch.ones(2, 0)), "clip a: features of shape [2, 0], expected [T, D]"),
    ("nan", _features(a=_ok(), b=_with(1, float("nan"))), "clip b: row 1 holds NaN or infinite values"),
    ("inf", _features(a=_with(2, float("-inf"))), "clip a: row 2 holds NaN or infinite values"),
    ("beyond-float16", _features(a=_with(0, 1e6)), "clip a: values beyond float16's range"),
    ("empty-tensor", _features(a=_ok(), b=torch.zeros(0, 768)),
     "clip b has no rows (FrozenBiLM's extraction gives none for a clip under 0.5 s); pass --skip-empty"),
    ("every-clip-empty-skipped", _features(a=torch.zeros(0, 768)), "every clip is empty (1 left out)"),
    ("dims-differ", _features(a=_ok(), b=_ok(dim=512)), "clip b: 512-d features, but clip a has 768-d ones"),
    ("not-the-presets-dim", _features(a=_ok(dim=512)), "clip a: 512-d features, but preset frozenbilm_clip makes"),
]


def _folder_left_clean(folder, keep):
    """Nothing but ``keep`` in ``folder``: no output, no temporary file, no lock left behind."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


@pytest.mark.parametrize("write, words", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_one_line_naming_it(tmp_path, capsys, write, words):
    pth = tmp_path / "bad.pth"
    write(pth)
    extra = ["--skip-empty"] if "left out" in words else []
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5", *extra], capsys)
    assert code == 3, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{pth}: " in err and words in err, err
    _folder_left_clean(tmp_path, ["bad.pth"])


def _store(path, clips=None):
    clips = clips or {"a": np.ones((2, 768), np.float16), "b": np.full((3, 768), 0.5, np.float16)}
    write_store(path, ((c, f, np.arange(len(f), dtype=np.float64)) for c, f in clips.items()), {})
    return path


def _nan_store(path):
    import h5py

    _store(path)
    with h5py.File(path, "r+") as h5:
        h5["features"][3] = np.nan  # the second row of clip b
    return path


@pytest.mark.parametrize("argv, code, words, keep", [
    (["import-frozenbilm", "{d}/nope.pth", "{d}/o.h5"], 3, "FILE.pth {d}/nope.pth: no such file", ["s.h5"]),
    (["import-frozenbilm", "{d}/sub", "{d}/o.h5"], 3, "{d}/sub: is a directory, not a file", None),
    (["import-frozenbilm", "{d}/pipe", "{d}/o.h5"], 3, "{d}/pipe: is a named pipe (FIFO)", None),
    (["import-frozenbilm", "{d}/ok.pth", "{d}/s.h5"], 3, "OUT.h5 {d}/s.h5: exists; pass --overwrite", None),
    (["import-frozenbilm", "{d}/ok.pth", "{d}/ok.pth", "--overwrite"], 3, "OUT.h5 {d}/ok.pth: is the input", None),
    (["import-frozenbilm", "{d}/ok.pth", "{d}/sub"], 3, "OUT.h5 {d}/sub: is a directory", None),
    (["import-frozenbilm", "{d}/ok.pth", "{d}/o.h5", "--preset", "clip_b32"], 2,
     "--preset: unknown feature preset 'clip_b32'; valid presets:", None),
    (["export-frozenbilm", "{d}/nope.h5", "{d}/o.pth"], 3, "{d}/nope.h5: no such feature store", None),
    (["export-frozenbilm", "{d}/nan.h5", "{d}/o.pth"], 3,
     "{d}/nan.h5: damaged feature store: clip b holds NaN or infinite values", None),
    (["export-frozenbilm", "{d}/s.h5", "{d}/ok.pth"], 3, "OUT.pth {d}/ok.pth: exists; pass --overwrite", None),
    (["export-frozenbilm", "{d}/s.h5", "{d}/s.h5", "--overwrite"], 3, "OUT.pth {d}/s.h5: is the input", None),
    (["export-frozenbilm", "{d}/s.h5", "{d}/sub"], 3, "OUT.pth {d}/sub: is a directory", None),
], ids=["import-missing", "import-a-folder", "import-a-pipe", "import-output-exists", "import-onto-its-input",
        "import-output-a-folder", "import-unknown-preset", "export-missing-store", "export-nan-store",
        "export-output-exists", "export-onto-its-input", "export-output-a-folder"])
def test_bad_paths_are_one_line(tmp_path, capsys, argv, code, words, keep):
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "pipe")
    _store(tmp_path / "s.h5")
    _nan_store(tmp_path / "nan.h5")
    _features(a=_ok())(tmp_path / "ok.pth")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    got, _, err = _cli(["features", *[a.format(d=tmp_path) for a in argv]], capsys)
    assert got == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert words.format(d=tmp_path) in err, err
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # nothing written or replaced


def test_a_crash_while_exporting_leaves_no_file(tmp_path, capsys, monkeypatch):
    store = _store(tmp_path / "s.h5")

    def disk_full(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")  # a torn file where the output would be
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    code, _, err = _cli(["features", "export-frozenbilm", store, tmp_path / "o.pth"], capsys)
    assert code == 3 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {tmp_path / 'o.pth'}: No space left on device" in err
    _folder_left_clean(tmp_path, ["s.h5"])
    # An existing output replaced with --overwrite is kept whole when the new one fails.
    (tmp_path / "o.pth").write_bytes(b"the earlier export")
    code, _, err = _cli(["features", "export-frozenbilm", store, tmp_path / "o.pth", "--overwrite"], capsys)
    assert code == 3 and (tmp_path / "o.pth").read_bytes() == b"the earlier export"
    _folder_left_clean(tmp_path, ["s.h5", "o.pth"])


def test_a_crash_while_importing_leaves_no_store(tmp_path, capsys, monkeypatch):
    from moviefib.features import store as store_mod

    pth = tmp_path / "f.pth"
    _features(a=_ok(), b=_ok(3))(pth)

    def disk_full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod._Writer, "finish", disk_full)  # after the features are written
    code, _, err = _cli(["features", "import-frozenbilm", pth, tmp_path / "o.h5"], capsys)
    assert code == 3 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {tmp_path / 'o.h5'}: No space left on device" in err
    _folder_left_clean(tmp_path, ["f.pth"])


@pytest.mark.parametrize("frames, fps, seconds", [(80, 25, 3.2), (63, 25, 2.52), (60, 25, 2.4), (12, 25, 0.48),
                                                  (90, 30, 3.0)])
def test_the_documented_timestamp_rule_is_ffmpegs(tmp_path, frames, fps, seconds):
    """Row i of FrozenBiLM's features is FFmpeg's output frame at i s (the import's timestamps), the frame on
    screen at i + 0.5 s, and there are round(d) rows for a clip of d seconds: what moviefib.features.frozenbilm
    documents, and what the preset's sampler takes."""
    video = write_synthetic_video(tmp_path / "v.mkv", frames, fps=fps)
    from test_video_fps_filter import _ffmpeg_filter  # FFmpeg's fps filter run through PyAV

    got = [(t, int(img[0, 0, 0])) for t, img in _ffmpeg_filter(video, 1)]
    assert len(got) == int(seconds + 0.5)
    for i, (t, red) in enumerate(got):
        assert t == i and red == int(np.ceil((i + 0.5) * fps)) - 1  # the last frame starting before i + 0.5 s
    if got:
        taken = [(info.time, int(f[0, 0, 0, 0])) for info, f in sample(video, get_preset("frozenbilm_clip").sampling)]
        assert taken == got
