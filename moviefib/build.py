"""Former home of the dataset builder, now :mod:`moviefib.questions`; kept so that scripts written
against ``from moviefib.build import …`` still run."""

from .questions import *  # noqa: F403
from .questions import __all__  # noqa: F401
