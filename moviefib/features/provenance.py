"""The provenance of an extracted store, and its fingerprint: the settings a rerun must share to resume."""

from __future__ import annotations

import importlib.metadata
import json

from ..video import Sampling, sampling_to_dict
from .registry import library_versions


class OtherSettingsError(ValueError):
    """An output (store or staging folder) holds features made with other settings: resuming would mix
    two kinds of features in one store, so it is refused unless told to overwrite."""


# Provenance keys that do not change the features: a rerun may differ in them and still resume.
_VOLATILE_KEYS = ("created", "shard", "num_clips_requested")


def make_provenance(extractor, sampling: Sampling, *, preset: str | None, device: str, amp: bool,
                    backend: str, short_side: int | None) -> dict:
    """The provenance of a store made with these settings (the extractor's own plus the run's)."""
    dev_type = device.split(":")[0]
    prov = dict(extractor.provenance)
    # One record of the versions: the core libraries, the extractor's own (transformers...) and the
    # decoder's. They are settings like the others: a rerun under other versions does not mix in.
    decoder_dist = "av" if backend == "pyav" else backend
    versions = {**library_versions(), **prov.get("versions", {})}
    try:
        versions[decoder_dist] = importlib.metadata.version(decoder_dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    prov.update({
        "extractor": extractor.name, "preset": preset, "kind": extractor.kind, "dim": extractor.dim,
        "window": extractor.window, "model_fps": extractor.fps, "sampling": sampling_to_dict(sampling),
        "timestamps": "seconds from the clip start: mean presentation time of each step's frames",
        "decoder": backend, "decode_short_side": short_side, "device": dev_type,
        "precision": "float16 autocast" if (amp and dev_type == "cuda") else "float32",
        "stored_dtype": "float16", "versions": versions,
    })
    return json.loads(json.dumps(prov, default=str))


def settings_fingerprint(prov: dict) -> dict:
    """The provenance less what a rerun may change and still resume (time, shard, clip count)."""
    return {k: v for k, v in prov.items() if k not in _VOLATILE_KEYS}


def settings_diff(old: dict, new: dict) -> str:
    """The settings that differ between two fingerprints, ``key: old -> new`` (nested dicts one level
    down, e.g. ``versions.torch``), to say why a run will not resume."""
    def show(v) -> str:
        text = json.dumps(v, sort_keys=True)
        return text if len(text) <= 60 else text[:57] + "..."

    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [f"{k}.{j}: {show(a.get(j))} -> {show(b.get(j))}"
                      for j in sorted(set(a) | set(b)) if a.get(j) != b.get(j)]
        else:
            parts.append(f"{k}: {show(a)} -> {show(b)}")
    return "; ".join(parts)
