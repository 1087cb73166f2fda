"""Progress bars: one helper for every long loop (tqdm, or a silent stand-in)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class _Silent:
    """What :func:`bar` returns when disabled: iterates like tqdm, shows nothing."""

    def __init__(self, iterable: Iterable | None) -> None:
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    leave: bool = False,
) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one of ``total`` steps, advanced by ``update``).

    With ``enabled=False`` a silent object with the same interface (iteration, ``update``,
    ``set_postfix``, ``close``, context manager) is returned, so loops need no branches.
    """
    if not enabled:
        return _Silent(iterable)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)
