"""Every coreset method, registered: the one module that imports each method module.

`coresets.py` defines the registry `METHODS` and the static methods (ranked by a proxy's records); `acs.py` the
adaptive ones (re-selected from the current model during training). Neither imports a module above it: code that
needs the whole registry (the params schema, the CLI, `easycore methods`, the pipeline) imports it from here.
A new method module is one more import line below.
"""
from __future__ import annotations

from easycore.core import acs  # noqa: F401  (registers acs_craig, acs_gradmatch)
from easycore.core.coresets import METHODS, direction_table_markdown, score_names  # noqa: F401

__all__ = ["METHODS", "direction_table_markdown", "score_names"]
