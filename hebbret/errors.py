"""User-facing input errors, and how a command reports them.

Every check at a public boundary raises :class:`InputError` with a one-line message that names the
problem. Commands (the ``hebbret`` CLI, the experiment scripts) run through :func:`run_command`:
an InputError prints ``<prog>: error: <message>`` and exits with status 2, Ctrl-C prints
``<prog>: interrupted`` (plus what was kept, when the command says) and exits with 130, warnings
print as ``<prog>: warning: <message>``; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import numpy as np


class InputError(ValueError):
    """Bad user input: wrong shape, NaN, empty database, unknown dataset, corrupt image, ..."""


def run_command(prog: str, main: Callable[[], int]) -> int:
    """Runs ``main()`` and turns user errors and Ctrl-C into one line on stderr and an exit
    status (2 and 130). A ``KeyboardInterrupt("note")`` adds its note, e.g. where the finished
    work was saved."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return main()
        except InputError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            note = f"; {e}" if str(e) else ""
            print(f"{prog}: interrupted{note}", file=sys.stderr)
            return 130


def check_seed(seed: object) -> int:
    """``seed`` as an int if it is an integer in [0, 2**63) (what numpy's and JAX's generators
    both take), else InputError."""
    if (
        isinstance(seed, bool)
        or not hasattr(seed, "__index__")
        or not 0 <= seed.__index__() < 2**63
    ):
        raise InputError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return seed.__index__()


def all_finite(values, step: int = 2**24) -> bool:
    """Whether every entry of an array is finite, checked ``step`` slices of its first axis at a
    time (a 1.75e9-entry CSR ``data`` array would otherwise need a 1.75 GB boolean temporary)."""
    return all(np.isfinite(values[s : s + step]).all() for s in range(0, len(values), step))
