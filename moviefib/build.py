"""Former home of the dataset builder, now :mod:`moviefib.questions`; kept so that scripts written
against ``from moviefib.build import …`` and ``from moviefib.build.tagging import Tagger`` still run.

The old package's submodules are aliases of the new ones in ``sys.modules`` (the same module objects,
not copies), so their classes are one: ``moviefib.build.builder.BuildError`` is
``moviefib.questions.BuildError``, and an exception raised by either is caught by either name.
"""

import importlib
import sys

from .questions import *  # noqa: F403
from .questions import __all__  # noqa: F401

# The submodules of the old package moviefib/build/: none imports spaCy or torch, so all are imported.
_SUBMODULES = ("builder", "card", "fidelity", "inputs", "tagging", "vocab", "words")

for _name in _SUBMODULES:
    globals()[_name] = sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f".questions.{_name}",
                                                                                   __package__)
del _name
