"""Human accuracy: a local web page on which people fill in the blanks (``moviefib human serve``).

* :mod:`.questions` the questions of a split (or a seeded sample) as shown, never with their answers;
* :mod:`.answers` the JSONL human-answer file, appended under a file lock, and input validation;
* :mod:`.protocol` which question an annotator gets next, derived from the answer file alone;
* :mod:`.clips` source clips transcoded once to muted WebM/VP9 for the browser;
* :mod:`.server` the Flask application and a background-capable server.

Flask (and PyAV for video mode) are imported only when the application is built.
"""

from __future__ import annotations
