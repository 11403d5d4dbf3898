"""Error types shared by every layer of the package; this module imports nothing of it.

Each error's message names what to fix: the config field, the file and line, or the toggle.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value or combination is invalid; the message names the field."""


class BackboneError(RuntimeError):
    """The backbone or its weights could not be loaded; the message says which and why."""
