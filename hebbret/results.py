"""One way to report numbers: atomic JSON records with config, seed, revision, data and timing."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
from typing import Any

import jax
import numpy as np

from hebbret.files import atomic_write_text


def git_revision() -> str:
    """The checkout's commit (with ``-dirty`` if it has changes), or ``"unknown"``."""
    here = pathlib.Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev or "unknown"


def _cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512 (XLA compiles for the host's vector
    units, so float rounding, and hence trained weights, can differ between CPU kinds)."""
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
    except OSError:
        return platform.processor() or "unknown"
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "?"
    )
    return f"{model}{', AVX-512' if 'avx512f' in info else ''}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def record(
    *,
    config: dict[str, Any],
    seed: int,
    metrics: dict[str, Any],
    wall_time_s: float,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A results record: config, seed, git revision, dataset (spec + checksum), metrics, wall
    time, and the machine (devices, versions) it ran on."""
    return _jsonable(
        {
            "config": config,
            "seed": seed,
            "git_revision": git_revision(),
            "dataset": dataset,
            "metrics": metrics,
            "wall_time_s": round(wall_time_s, 3),
            "machine": {
                "devices": [str(d) for d in jax.devices()],
                "cpu": _cpu_model(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "jax": jax.__version__,
            },
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    )


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Writes a record as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(_jsonable(payload), indent=2) + "\n")


def write_run(
    out: str | os.PathLike,
    record_: dict[str, Any],
    markdown: str,
    *,
    complete: bool,
) -> dict[str, Any]:
    """An experiment's ``out.json`` (the record, with ``metrics.complete``) and ``out.md``;
    an incomplete run (written after each stage of a long run) is marked partial in both.
    Returns the record as written."""
    record_ = record_ | {"metrics": record_["metrics"] | {"complete": complete}}
    write_json(f"{out}.json", record_)
    if not complete:
        markdown = "**Partial: the run is still going or was interrupted.**\n\n" + markdown
    atomic_write_text(f"{out}.md", markdown)
    return record_


def previous_run(
    out: str | os.PathLike, config: dict[str, Any], seed: Any = None
) -> dict[str, Any] | None:
    """The record in ``out.json`` (a partial one included) if it was written with the same value
    for every key of ``config`` (and ``seed``, when given), else None: what a rerun of the same
    command resumes from."""
    path = pathlib.Path(f"{out}.json")
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    same = {k: old["config"].get(k) for k in config} == _jsonable(config)
    return old if same and (seed is None or old["seed"] == seed) else None
