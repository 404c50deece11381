"""Score Video-LLMs served behind OpenAI-compatible chat-completions endpoints (vLLM, SGLang, hosted APIs).

Modules: :mod:`.prompt` (the versioned prompt, prompt files), :mod:`.frames` (frames sampled by time,
JPEG data URLs), :mod:`.parse` (the reply reduced to one word), :mod:`.cache` (the crash-safe reply
cache, request fingerprints), :mod:`.client` (the ``openai`` client, retries), :mod:`.sources` (the
questions of a split and their clips), :mod:`.run` (:func:`predict_vlm`). The names below load their
module on first access: ``import moviefib.vlm`` imports neither ``openai`` nor PyAV. Needs the ``vlm``
extra (``pip install 'moviefib[vlm]'``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "predict_vlm": "run", "VLMConfig": "run", "VLMSummary": "run", "output_paths": "run",
    "Prompt": "prompt", "PromptError": "prompt", "default_prompt": "prompt", "load_prompt": "prompt",
    "PROMPT_VERSION": "prompt",
    "FrameSpec": "frames",
    "parse_reply": "parse", "Parsed": "parse", "PARSE_RULE_VERSION": "parse", "UNPARSED_ANSWER": "parse",
    "ReplyCache": "cache", "CacheError": "cache", "CachedReply": "cache",
    "RetryPolicy": "client", "EndpointUnavailable": "client", "RequestRefused": "client",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
