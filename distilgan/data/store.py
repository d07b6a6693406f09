"""Moved to :mod:`distilgan.store`; this name stays for code written against distilgan 0.x."""

from __future__ import annotations

import warnings

from distilgan.store import *  # noqa: F401,F403  (the same public API)
from distilgan.store import __all__  # noqa: F401

warnings.warn("distilgan.data.store moved to distilgan.store; import it from there", DeprecationWarning,
              stacklevel=2)
