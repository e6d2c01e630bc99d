"""Names of things a user names (codebooks, packed weights, sweeps): one pattern that can never leave its folder."""

from __future__ import annotations

import re
from typing import Any

from posthoc_vq.errors import ConfigError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}"
_NAME = re.compile(NAME_PATTERN)


def is_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".tmp-" not in name and not name.endswith((".json", ".safetensors"))


def check_name(name: Any, what: str = "name") -> str:
    """``name`` if it is a valid name (:data:`NAME_PATTERN`), else a ConfigError saying why.

    1-100 characters of letters, digits and ``. _ + -``, starting with a letter or digit; so no
    ``/``, ``..``, absolute paths, ``.`` or the empty name. ``.tmp-`` (temp files) and file
    suffixes are reserved.
    """
    if not is_name(name):
        raise ConfigError(
            f"invalid {what} {name!r}: a name is 1-100 characters of letters, digits and . _ + -, starting with a letter or digit "
            f"(pattern {NAME_PATTERN}), so it can never leave its folder; no '/', '..', absolute paths, '.tmp-' or file suffixes"
        )
    return name
