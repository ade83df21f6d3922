"""
Safe names for workspaces, derived from provision ids of any shape.

A provision id is whatever the runner chose: it may hold slashes, dots, spaces,
control characters or non-ASCII letters. Each backend needs a name that cannot
escape its root and that its system accepts (a directory, a git branch, a
container name, a server name). An id that is already such a name is used as it
is; any other id is reduced to its safe characters and followed by the first
eight hex digits of its SHA-256, so two ids that reduce alike still get
different names.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_UNSAFE_HOSTNAME = re.compile(r"[^a-z0-9-]+")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def id_digest(provision_id: str) -> str:
    """Return the SHA-256 of a provision id in hex, a label value any system accepts."""
    return hashlib.sha256(provision_id.encode("utf-8", "surrogatepass")).hexdigest()


def safe_name(provision_id: str, max_length: int = 64) -> str:
    """
    Return a name of letters, digits, '_' and '-' that starts with a letter or digit.

    Directories, git branches and Docker container names all accept it, and it
    contains no path separator and no '..'.
    """
    if _is_safe(provision_id, max_length):
        return provision_id
    return _reduce(_UNSAFE.sub("-", provision_id), provision_id, max_length)


def hostname_label(provision_id: str, max_length: int = 63) -> str:
    """Return a lower-case DNS label (letters, digits, '-'; at most 63 characters; never empty)."""
    if _HOSTNAME.fullmatch(provision_id) and len(provision_id) <= max_length:
        return provision_id
    return _reduce(_UNSAFE_HOSTNAME.sub("-", provision_id.lower()), provision_id, max_length).replace("_", "-")


def _is_safe(provision_id: str, max_length: int) -> bool:
    return (
        0 < len(provision_id) <= max_length
        and _UNSAFE.search(provision_id) is None
        and provision_id[0] not in "-_"
        and provision_id[-1] not in "-_"
    )


def _reduce(reduced: str, provision_id: str, max_length: int) -> str:
    suffix = id_digest(provision_id)[:8]
    stem = reduced.strip("-_")[: max_length - len(suffix) - 1].strip("-_")
    return f"{stem}-{suffix}" if stem else f"ws-{suffix}"
