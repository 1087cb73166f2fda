"""Tzelepi & Tefas' retraining study (Tables 7 / 8 / 10): FU, RRI, RF and their pipelines.

For each starting network (``supervised``: the library's 6-layer network trained on the labels,
the analogue of their KevinNet; ``hpca``: the same network Hebbian-pre-trained without labels,
the analogue of a generic pre-trained CaffeNet), each cut (retrained layers; target layer) and
each scheme (``fu``, ``rri``, ``rf``, ``fu+rri``, ...), the database and query features of the
retrained target layer are scored with mAP over the whole database (eq. 18) and mAP@50, plain and
with query expansion. Stages of a pipeline start from the previous stage's parameters; a stage
shared by several schemes (``fu`` in ``fu+rri`` and ``fu+rf``) is trained once. Starting networks
and every stage are checkpointed under ``checkpoints/<name of OUT>/`` (orbax, per epoch) and every
finished row is written at once, so the same call resumes. Protocol: docs/retraining.md; settings:
``experiments/configs/retraining.py``.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from hebbret import checkpoints, data, files
from hebbret.data import splits
from hebbret.errors import InputError, check_seed
from hebbret.nets import convnet, finetune
from hebbret.pipelines import retraining_report as report
from hebbret.pipelines.study import Study, as_dict, default_out
from hebbret.retraining import network, stages
from hebbret.rules import hpca, hpca_train

STARTS = ("supervised", "hpca")
ITERATIVE = "iterative rf"


def _schemes(cfg: dict[str, Any]) -> tuple[str, ...]:
    """Every row of a (start, cut): the starting features, each scheme, iterative RF if asked."""
    return ("baseline", *cfg["schemes"]) + ((ITERATIVE,) if cfg["iterative_rf"]["rounds"] else ())


def check(cfg: dict[str, Any]) -> dict[str, Any]:
    """InputError now, before any data is loaded, for unknown starts / schemes / layers and bad
    sizes; returns the parsed cuts."""
    unknown = set(cfg["starts"]) - set(STARTS)
    if unknown or not cfg["starts"]:
        raise InputError(f"unknown starting networks {sorted(unknown)}: expected some of {STARTS}")
    for scheme in cfg["schemes"]:
        stages.parse(scheme)
    check_seed(cfg["seed"])
    for top in cfg["qe_ablation"]:
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise InputError(
                f"config.qe_ablation must be integers >= 1, got {cfg['qe_ablation']!r}"
            )
    for field in ("database", "queries", "query_sets", "qe_top", "svqe_shortlist"):
        value = cfg[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"config.{field} must be an integer >= 1, got {value!r}")
    for field, value in cfg["iterative_rf"].items():
        low = 0 if field == "rounds" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(
                f"config.iterative_rf.{field} must be an integer >= {low}, got {value!r}"
            )
    unknown = set(cfg["svqe"]) - {"baseline", *cfg["schemes"]}
    if unknown:
        raise InputError(f"config.svqe names {sorted(unknown)}: not baseline or in config.schemes")
    if cfg["rf"]["users"] > cfg["queries"]:
        raise InputError(
            f"config.rf.users={cfg['rf']['users']} > config.queries={cfg['queries']} (the users "
            "are the first query set's queries)"
        )
    return {text: stages.parse_cut(text) for text in cfg["cuts"]}


def run(
    config: Any,
    out: str | None = None,
    *,
    checkpoint_root: str | pathlib.Path | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the study and returns its record (also written to ``OUT.json``).

    Args:
      config: ``experiments/configs/retraining.py`` settings (ConfigDict or dict).
      out: path prefix of ``OUT.json`` / ``OUT.md`` (default ``results/retraining_<experiment>``).
      checkpoint_root: where starting networks and stages are checkpointed.
      command: the command line, for the report.
      log: progress lines (default print).
    """
    cfg = as_dict(config)
    cuts = check(cfg)
    out = out or default_out("retraining", cfg)
    ckpt_root = pathlib.Path(checkpoint_root or f"checkpoints/{pathlib.Path(out).name}")
    files.check_writable(ckpt_root / "step")
    study = Study(out, cfg, cfg["seed"], suffixes=("_grid_before.png", "_grid_after.png"), log=log)
    log = study.log  # print, unless the caller gave a log
    timing: dict[str, float] = {}
    try:
        ds = data.load(cfg["dataset"])
        if "train" not in ds.splits or "test" not in ds.splits:
            raise InputError(f"{ds.spec} needs train and test splits, has {sorted(ds.splits)}")
        train, test = ds.splits["train"], ds.splits["test"]
        if train.y is None or test.y is None:
            raise InputError(f"{ds.spec}: missing labels (the protocol scores by class)")
        rng = np.random.default_rng(cfg["seed"])
        db = np.sort(rng.permutation(len(train.x))[: cfg["database"]])
        if len(db) < cfg["database"]:
            raise InputError(f"config.database={cfg['database']} > {len(train.x)} training images")
        qsets = [
            np.sort(splits.random_queries(len(test.x), cfg["queries"], cfg["seed"] + s))
            for s in range(cfg["query_sets"])
        ]
        protocol = stages.Protocol(
            xb=train.x[db], yb=train.y[db],
            xq=[test.x[q] for q in qsets], yq=[test.y[q] for q in qsets],
        )  # fmt: skip

        def save(complete: bool) -> dict[str, Any]:
            text = report.report(command, cfg, ds, study.rows, timing, study.seconds)
            return study.save(
                {"timing": timing},
                text,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
                complete=complete,
            )

        done = {(r["start"], r["cut"], r["scheme"]) for r in study.rows}
        for start in cfg["starts"]:
            todo = [
                (start, text, s)
                for text in cuts
                for s in _schemes(cfg)
                if (start, text, s) not in done
            ]
            if not todo:
                continue
            t = time.perf_counter()
            variables, mean, std = _start_network(cfg, start, train, ds.num_classes, ckpt_root, log)
            timing[f"start_{start}_s"] = time.perf_counter() - t
            for text, c in cuts.items():
                runner = None
                for _, _, scheme in [k for k in todo if k[1] == text]:
                    runner = runner or stages.Runner(
                        cfg, protocol, variables, mean, std, c, keep_variance=start == "hpca",
                        folder=ckpt_root / start / text.replace(":", "@"), log=log,
                    )  # fmt: skip
                    t = time.perf_counter()
                    if scheme == ITERATIVE:
                        row = runner.iterative_feedback(**cfg["iterative_rf"])
                        row["eval_s"] = time.perf_counter() - t
                    else:
                        row = runner.row(scheme)
                    study.rows.append({"start": start, "cut": text, "scheme": scheme} | row)
                    log(report.line(study.rows[-1]))
                    save(False)
                first = (start, text) == (cfg["starts"][0], next(iter(cuts)))
                if runner is not None and first and cfg["schemes"]:  # the best scheme's effect
                    mine = [r for r in study.rows if (r["start"], r["cut"]) == (start, text)]
                    best = max(
                        (r for r in mine if r["scheme"] in cfg["schemes"]), key=lambda r: r["map"]
                    )
                    runner.grid(out, best["scheme"])
        record = save(complete=True)
        log(f"wrote {out}.json and {out}.md ({study.seconds / 60:.1f} min)")
        return record
    except KeyboardInterrupt:
        raise study.interrupted() from None


def _start_network(cfg, start, train, num_classes, ckpt_root, log) -> tuple[dict, Any, Any]:
    """The starting network's variables and input statistics, trained once and saved under
    ``ckpt_root/<start>/network`` (:func:`hebbret.retraining.network.save_network`)."""
    path = ckpt_root / start / "network"
    if (path / checkpoints.CHECKSUMS).exists():
        log(f"{start}: starting network restored from {path}")
        variables, mean, std, _ = network.load_network(path, num_classes)
        return variables, mean, std
    n = cfg["train_images"] or len(train.x)
    if n > len(train.x):
        raise InputError(f"config.train_images={n} > {len(train.x)} training images")
    order = np.random.default_rng(cfg["seed"] + 1).permutation(len(train.x))
    x, y = train.x[order[:n]], train.y[order[:n]]
    mean, std = convnet.channel_stats(x)
    key = jax.random.key(cfg["seed"])
    model = convnet.Net(num_classes, depth=5)
    if start == "supervised":
        n_val = min(cfg["validation"], n // 10)
        ft = finetune.FinetuneConfig(**cfg["supervised"])
        result = finetune.finetune(
            jax.random.fold_in(key, 1), model, convnet.init(model, key), (x[n_val:], y[n_val:]),
            (x[:n_val], y[:n_val]), mean, std, ft,
        )  # fmt: skip
        variables = result.variables
        log(f"supervised: best validation accuracy {max(result.val_accuracy):.3f}")
    else:
        variables = hpca_train.pretrain(
            jax.random.fold_in(key, 2), x, mean, std, hpca.HebbianConfig(**cfg["hebbian"]),
            num_classes=num_classes, checkpoint_dir=ckpt_root / start / "hebbian",
        )  # fmt: skip
    network.save_network(path, variables, mean, std, keep_variance=start == "hpca")
    return jax.tree.map(np.asarray, variables), mean, std
