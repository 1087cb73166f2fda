"""Lagani et al.'s study (Tables 1 / 2): Hebbian PCA pre-training vs none vs beta-VAE, by labels.

For every data seed the pre-trained networks (HPCA, beta-VAE) are computed once, checkpointed
with orbax under ``checkpoints/seed<S>/`` and reused by every regime and layer; every finished
(seed, regime, method, layer) row is written to ``OUT.json`` at once, so the same call after an
interruption resumes where it stopped (rows from the record, pre-training from its last epoch).
The baselines (no pre-training) of every seed run before any pre-training.
Protocol and metric: docs/hebbian_pca.md; settings: ``experiments/configs/hpca.py``.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from hebbret import checkpoints, data, files, mesh
from hebbret.data import splits
from hebbret.errors import InputError, check_seed
from hebbret.nets import convnet, finetune, layerwise, vae
from hebbret.pipelines import hpca_report
from hebbret.pipelines.study import Study, as_dict, check_positive_ints, default_out
from hebbret.rules import hpca, hpca_train

NAMES = hpca_report.NAMES
BASELINES = ("none", "none_full")  # methods without pre-training


def run(
    config: Any,
    out: str | None = None,
    *,
    checkpoint_root: str | pathlib.Path | None = None,
    devices: int | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the study and returns its record (also written to ``OUT.json``).

    Args:
      config: ``experiments/configs/hpca.py`` settings (ConfigDict or dict).
      out: path prefix of ``OUT.json`` / ``OUT.md`` (default ``results/hpca_<experiment>[_quick]``).
      checkpoint_root: where pre-trained networks are checkpointed (default ``checkpoints/<name
        of OUT>``).
      devices: split the Hebbian minibatches over this many devices (``mesh.data_mesh``).
      command: the command line, for the report.
      log: progress lines (default print).
    """
    cfg = as_dict(config)
    unknown = set(cfg["methods"]) - set(NAMES)
    if unknown:
        raise InputError(f"unknown methods {sorted(unknown)}: expected some of {sorted(NAMES)}")
    for seed in cfg["seeds"]:
        check_seed(seed)
    check_positive_ints(cfg, "regimes", "layers")
    out = out or default_out("hpca", cfg)
    ckpt_root = pathlib.Path(checkpoint_root or f"checkpoints/{pathlib.Path(out).name}")
    files.check_writable(ckpt_root / "step")
    study = Study(out, cfg, list(cfg["seeds"]), log=log)
    rows, log = study.rows, study.log
    timing: dict[str, list[float]] = {"hebbian_epoch_s": [], "vae_epoch_s": []}
    try:
        ds = data.load(cfg["dataset"])
        if "train" not in ds.splits or "test" not in ds.splits:
            raise InputError(f"{ds.spec} needs train and test splits, has {sorted(ds.splits)}")
        grid = mesh.data_mesh(devices) if devices else None

        def save(complete: bool) -> dict[str, Any]:
            summary = hpca_report.summarise(rows, cfg)
            text = hpca_report.report(command, cfg, ds, rows, timing, study.seconds)
            return study.save(
                {"summary": summary, "timing": timing},
                text,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
                complete=complete,
            )

        # the baselines (no pre-training) of every seed first: an interrupted run has them all
        baselines = [m for m in cfg["methods"] if m in BASELINES]
        pretrained = [m for m in cfg["methods"] if m not in BASELINES]
        for methods in (baselines, pretrained):
            for seed in cfg["seeds"] if methods else ():
                _run_seed(cfg, ds, seed, methods, ckpt_root, grid, rows, timing, save, log)
        record = save(complete=True)
        log(f"wrote {out}.json and {out}.md ({study.seconds / 60:.1f} min)")
        return record
    except KeyboardInterrupt:
        raise study.interrupted() from None


def _run_seed(cfg, ds, seed, methods, ckpt_root, grid, rows, timing, save, log) -> None:
    """Every (regime, method, layer) row of one data seed and these methods that is not in
    ``rows`` yet; ``save(False)`` after each."""
    train, test = ds.splits["train"], ds.splits["test"]
    split = splits.labelled_split(len(train.x), 1.0, seed, cfg["num_validation"])
    rng = np.random.default_rng(seed)
    mean, std = convnet.channel_stats(train.x[split.train])
    db = split.train[: cfg["database"]]
    val = split.validation[: cfg["val_queries"]]
    q = np.sort(rng.permutation(len(test.x))[: cfg["queries"]])
    database, val_set = (train.x[db], train.y[db]), (train.x[val], train.y[val])
    queries = (test.x[q], test.y[q])
    key = jax.random.key(seed)
    ft_cfg = finetune.FinetuneConfig(**cfg["finetune"])
    pretrained: dict[str, dict | None] = dict.fromkeys(BASELINES)
    for method in methods:
        if method not in BASELINES and _todo(rows, cfg, seed, method):
            folder = ckpt_root / f"seed{seed}" / (_hpca_dir(cfg) if method == "hpca" else "vae")
            pretrained[method] = _pretrain(
                cfg, method, key, train.x[split.train], mean, std, ds, grid, folder, timing, log
            )
            log(f"seed {seed}: {NAMES[method]} pre-training done")
    for regime in cfg["regimes"]:
        n_lab = max(1, round(regime / 100 * len(split.train)))
        lab = split.train[:n_lab]
        ids = {"seed": seed, "regime": regime, "labelled": n_lab}
        common = {"num_classes": ds.num_classes, "nystroem_components": cfg["nystroem"]}
        sets = (train.x[lab], train.y[lab]), val_set, database, queries, mean, std, ft_cfg
        for method in methods:
            todo = [layer for layer in cfg["layers"] if not _done(rows, ids, method, layer)]
            if method == "none_full" and todo:  # one network scored at every layer
                t = time.perf_counter()
                new = layerwise.evaluate_full_network(
                    jax.random.fold_in(key, 1000 * regime), todo, *sets, seed=seed, **common
                )
                seconds = (time.perf_counter() - t) / len(new)
                for r in new:
                    rows.append(ids | {"method": method} | r | {"seconds": seconds})
                    log(hpca_report.line(rows[-1]))
                save(False)
                continue
            for layer in todo:
                t = time.perf_counter()
                row = layerwise.evaluate_layer(
                    jax.random.fold_in(key, 1000 * regime + layer), layer,
                    pretrained[method], *sets, seed=seed, **common,
                    keep_variance=method == "hpca" and cfg["hpca_keep_variance"],
                )  # fmt: skip
                rows.append(ids | {"method": method} | row | {"seconds": time.perf_counter() - t})
                log(hpca_report.line(rows[-1]))
                save(False)


def _pretrain(cfg, method, key, images, mean, std, ds, grid, folder, timing, log) -> dict:
    """The HPCA (key fold 1) or beta-VAE (key fold 2) network of one seed, resumed from
    ``folder``; records total and per-epoch seconds (epochs computed here only) in ``timing``."""
    t = time.perf_counter()
    restored = checkpoints.latest_step(folder) or 0
    if method == "hpca":
        hcfg = hpca.HebbianConfig(**cfg["hebbian"])
        variables = hpca_train.pretrain(
            jax.random.fold_in(key, 1), images, mean, std, hcfg, num_classes=ds.num_classes,
            mesh=grid, checkpoint_dir=folder, keep_variance=cfg["hpca_keep_variance"],
        )  # fmt: skip
        epochs = hcfg.epochs
    else:
        vcfg = vae.VAEConfig(**cfg["vae"])
        variables, _ = vae.pretrain_vae(
            jax.random.fold_in(key, 2), images, mean, std, vcfg, checkpoint_dir=folder
        )
        epochs = vcfg.epochs
    seconds = time.perf_counter() - t
    restored = min(restored, epochs)
    ran = epochs - restored
    timing.setdefault(f"{method}_total_s", []).append(seconds)
    timing.setdefault(f"{method}_epochs_restored", []).append(restored)
    if ran:  # per-epoch time of the epochs computed here, not of restored ones
        timing["hebbian_epoch_s" if method == "hpca" else "vae_epoch_s"].append(seconds / ran)
    log(f"{NAMES[method]}: {ran} epochs run, {restored} restored from {folder} ({seconds:.0f} s)")
    return variables


def _hpca_dir(cfg: dict) -> str:
    """Checkpoint folder name of the Hebbian run: settings that change its trajectory (not the
    epoch count, so more epochs resume from fewer)."""
    lr, batch = cfg["hebbian"]["lr"], cfg["hebbian"]["batch"]
    return f"hpca_lr{lr:g}_b{batch}" + ("_kv" if cfg["hpca_keep_variance"] else "")


def _done(rows: list[dict], ids: dict, method: str, layer: int) -> bool:
    key = (ids["seed"], ids["regime"], method, layer)
    return any((r["seed"], r["regime"], r["method"], r["layer"]) == key for r in rows)


def _todo(rows: list[dict], cfg: dict, seed: int, method: str) -> bool:
    return not all(
        _done(rows, {"seed": seed, "regime": regime}, method, layer)
        for regime in cfg["regimes"]
        for layer in cfg["layers"]
    )
