"""What every study pipeline shares: its output files, its record, resuming, progress lines.

A study writes ``OUT.json`` (a :func:`hebbret.results.record`: config, seed, git revision,
dataset checksum, metrics, wall time) and ``OUT.md`` (the table next to the paper's) after every
finished row, so an interrupted run keeps its rows and the same call resumes from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hebbret import files, results
from hebbret.errors import InputError


def as_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config (``ml_collections.ConfigDict`` or mapping), nested included."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return {k: as_dict(v) if isinstance(v, Mapping) else v for k, v in dict(config).items()}


def check_positive_ints(cfg: dict[str, Any], *fields: str) -> None:
    """InputError now (before any data is loaded) unless each field is a tuple of integers >= 1
    (``--config.ks=a,b`` parses as strings)."""
    for field in fields:
        values = cfg[field]
        if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            raise InputError(f"config.{field} must be integers >= 1, got {values!r}")


def default_out(study: str, config: Any) -> str:
    """``results/<study>_<experiment>[_quick]``: where a study writes unless told otherwise."""
    cfg = as_dict(config)
    return f"results/{study}_{cfg['experiment']}{'_quick' if cfg['quick'] else ''}"


class Study:
    """Output of one study run: checks ``OUT.*`` before any work, holds the rows, writes both
    files atomically (``save``), and restores the rows of a previous run with the same config.

    Args:
      out: path prefix of the outputs (``OUT.json``, ``OUT.md`` and any ``suffixes``).
      config: the study's settings, as recorded; a previous record resumes only if it has the
        same value for every key.
      seed: the record's seed (an int or a list of seeds).
      suffixes: further files the study writes (checked writable now).
      resume: restore the rows of a previous run with the same config.
      log: where progress lines go (default: print, flushed).
    """

    def __init__(
        self,
        out: str,
        config: dict[str, Any],
        seed: Any,
        *,
        suffixes: Sequence[str] = (),
        resume: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        for suffix in (".json", ".md", *suffixes):
            files.check_writable(f"{out}{suffix}")
        self.out, self.config, self.seed = out, config, seed
        self.log = log or (lambda line: print(line, flush=True))
        self.start = time.perf_counter()
        previous = results.previous_run(out, config) if resume else None
        #: the record being resumed (None for a fresh run)
        self.previous: dict[str, Any] | None = previous
        self.rows: list[dict[str, Any]] = list(previous["metrics"]["rows"]) if previous else []
        self._before = float(previous["wall_time_s"]) if previous else 0.0
        if self.rows:
            self.log(f"resuming: {len(self.rows)} rows already in {out}.json")

    @property
    def seconds(self) -> float:
        """Wall time of the study: this process's, plus the resumed record's."""
        return self._before + time.perf_counter() - self.start

    def save(
        self,
        metrics: dict[str, Any],
        markdown: str,
        *,
        dataset: dict[str, Any] | None,
        complete: bool,
    ) -> dict[str, Any]:
        """Writes ``OUT.json`` (the record, ``metrics`` with the rows) and ``OUT.md``; returns
        the record."""
        record = results.record(
            config=self.config,
            seed=self.seed,
            metrics={"rows": self.rows} | metrics,
            wall_time_s=self.seconds,
            dataset=dataset,
        )
        return results.write_run(self.out, record, markdown, complete=complete)

    def interrupted(self) -> KeyboardInterrupt:
        """The Ctrl-C message: what was kept and how to go on."""
        if not self.rows:
            return KeyboardInterrupt("no row had finished")
        return KeyboardInterrupt(
            f"the {len(self.rows)} finished rows are in {self.out}.json (marked partial); "
            "run the same command again to resume"
        )
