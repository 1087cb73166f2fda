"""How the data loaders name user paths and text in messages and warnings: on one line, escaped
as repr() does, and warnings attributed to the code that called :func:`hebbret.data.load`."""

from __future__ import annotations

import os
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def quote(path: str | os.PathLike) -> str:
    """A user's path for a message: quoted and escaped as repr() does, so it stays one line."""
    return repr(os.fspath(path))


def printable(text: object) -> str:
    """``str(text)`` with its unprintable characters (newlines, tabs, other control characters)
    escaped as repr() does, for an unquoted part of a message (a spec, an exception's text)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside ``hebbret.data``."""
    warnings.warn(message, stacklevel=2, skip_file_prefixes=(_PACKAGE,))
