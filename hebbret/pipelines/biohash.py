"""BioHash's tables (Ryali et al. 2020; docs/biohash.md): hashing mAP on raw pixels.

Every (activity, method, k) cell of the grid is checked before the first fit, then fitted,
encoded and scored by Hamming ranking (:func:`hebbret.pipelines.compare.iter_rows`); ``OUT.json``
and ``OUT.md`` are rewritten after every row, and a rerun with the same config resumes from the
rows already there. Settings: ``experiments/configs/biohash.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from hebbret import data, files, hashing, plots, published
from hebbret.data import splits
from hebbret.errors import check_seed
from hebbret.pipelines import compare
from hebbret.pipelines.study import Study, as_dict, check_positive_ints, default_out
from hebbret.rules.biohash import RuleConfig


def protocol(ds: data.Dataset, cfg: dict) -> splits.Protocol:
    """The study's queries and database (:func:`hebbret.data.splits.class_query_protocol`)."""
    return splits.class_query_protocol(
        ds,
        cfg["queries_per_class"],
        cfg["R"],
        cfg["seed"],
        query_subset=cfg["query_subset"],
        validation=100 if cfg["validation"] else None,
        shadows=cfg["shadows"],
    )


def run(
    config: Any,
    out: str | None = None,
    *,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the study; returns the record (also in ``OUT.json``, table in
    ``OUT.md``, and for an activity sweep the plot in ``OUT.png``)."""
    cfg = as_dict(config)
    check_seed(cfg["seed"])
    check_positive_ints(cfg, "ks")
    out = out or default_out("biohash", cfg)
    study = Study(out, cfg, cfg["seed"], suffixes=(".png",) if cfg["activities"] else (), log=log)
    rows = study.rows
    try:
        ds = data.load(cfg["dataset"])
        proto = protocol(ds, cfg)
        study.log(f"{ds.spec}: {proto.name}, R = {proto.R or 'All'}")
        rule = RuleConfig(**cfg["rule"])
        grid = []  # (config, method, ks): every cell checked before the first fit
        for activity in cfg["activities"] or (cfg["activity"],):
            hcfg = hashing.HashConfig(k=1, activity=activity, rule=rule)
            for method in cfg["methods"]:
                ks = [k for k in cfg["ks"] if k <= cfg["max_k"].get(method, max(cfg["ks"]))]
                compare.check([method], ks, hcfg, proto.xb.shape)
                grid.append((hcfg, method, ks))

        def save(complete: bool) -> dict[str, Any]:
            text = report(command, cfg, ds, proto, rows, study.seconds)
            record = study.save(
                {"protocol": proto.name},
                text,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
                complete=complete,
            )
            if cfg["activities"] and complete and rows:
                _plot(out, proto, rows)
            return record

        for hcfg, method, ks in grid:
            done = {r["k"] for r in rows if (r["method"], r["activity"]) == (method, hcfg.activity)}
            todo = [k for k in ks if k not in done]
            if not todo:
                continue
            for row in compare.iter_rows(
                proto,
                methods=(method,),
                ks=todo,
                config=hcfg,
                key=jax.random.key(cfg["seed"]),
                progress=True,
                log=study.log,
            ):
                rows.append(row | {"activity": hcfg.activity})
                save(complete=False)
        record = save(complete=True)
        study.log(f"wrote {out}.json and {out}.md ({study.seconds:.0f} s)")
        return record
    except KeyboardInterrupt:
        raise study.interrupted() from None


def _plot(out: str, proto: splits.Protocol, rows: list[dict]) -> None:
    fig = plots.sweep(
        [100 * r["activity"] for r in rows],
        [r["map"] for r in rows],
        xlabel="activity k / m (%)",
        ylabel=f"mAP@{proto.R or 'All'} (%), validation",
        logx=True,
        title=f"BioHash activity sweep, k = {rows[0]['k']}",
    )
    files.atomic_write(f"{out}.png", lambda f: fig.savefig(f, format="png", dpi=120))


def report(command: str, cfg: dict, ds, proto, rows: list[dict], seconds: float) -> str:
    """Markdown: the command, the protocol, the table next to the paper, BioHash training."""
    lines = [
        f"`{command}`",
        "",
        f"{ds.label}, raw pixels; {proto.name}; mAP@{proto.R or 'All'} (percent) by Hamming "
        "ranking, AP normalised by the relevant items retrieved in the top R (BioHash eq. 12), "
        "ties exact (expected AP over tied orders). Paper's number in brackets. Wall time "
        f"{seconds / 60:.1f} min on {os.cpu_count()} CPU cores.",
        "",
    ]
    if cfg["activities"]:
        lines += ["| activity | m | mAP (validation) |", "|---:|---:|---:|"]
        lines += [f"| {100 * r['activity']:.2f} % | {r['bits']} | {r['map']:.2f} |" for r in rows]
        if rows:
            best = max(rows, key=lambda r: r["map"])
            lines += [
                "",
                f"Best on validation: activity {100 * best['activity']:.2f} % "
                "(paper, Fig. 4: 0.25 % best, 0.5 % used for CIFAR-10 as nearly as good).",
            ]
    else:
        paper = getattr(published, cfg["paper"]) if cfg["paper"] else None
        lines.append(compare.table(rows, paper=paper, paper_ks=published.BIOHASH_KS))
    bio = [r for r in rows if "epochs" in r]
    if bio:
        lines += [
            "",
            "Training (BioHash Tables 9-10 report training time; here on this machine's CPU):",
            "",
            "| method | k | activity | m | epochs | final mean norm | fit time (s) | s / epoch |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['method']} | {r['k']} | {100 * r['activity']:.2f} % | {r['bits']} | "
            f"{r['epochs']} | {r['mean_norm']:.3f} | {r['fit_s']:.1f} | "
            f"{r['fit_s'] / max(r['epochs'], 1):.2f} |"
            for r in bio
        ]
    return "\n".join(lines) + "\n"
