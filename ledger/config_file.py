"""Reading the operator's TOML config file (``consent gateway --config``, ``$CONSENT_CONFIG_FILE``).

One reader for the CLI, which checks the file's tables before it starts a gateway, and for the
gateway's settings, which take their ``[gateway]`` table from it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

__all__ = ["ConfigFileError", "read_config_file"]


class ConfigFileError(ValueError):
    """The TOML settings file cannot be read, or names a setting the gateway does not know."""


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed file; a missing, unreadable or malformed file is one-sentence
    :class:`ConfigFileError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"the config file {path} is not valid TOML: {exc}") from None
