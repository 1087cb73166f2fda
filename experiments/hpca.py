"""Reproduce Lagani et al.'s Tables 1 / 2: HPCA pre-training vs none vs beta-VAE, by labels.

    python experiments/hpca.py [--experiment cifar10|cifar100] [--quick] [--seeds 0,1]

For every data seed the pre-trained networks (HPCA, beta-VAE) are computed once, checkpointed
with orbax under ``--checkpoints`` and reused by every regime and layer; every finished
(seed, regime, method, layer) row is written to ``results/hpca_<experiment>[_quick].json`` at
once, so an interrupted run started again with the same command resumes where it stopped.
Writes ``.json`` and ``.md`` (our mAP at the validation-chosen layer, mean and 95 % CI over
seeds, next to the paper's). See experiments/configs/hpca.py.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from configs.hpca import get_config  # noqa: E402

from hebbret import checkpoints, data, files, published, results
from hebbret.data import splits
from hebbret.errors import InputError, run_command  # noqa: E402
from hebbret.nets import convnet, finetune, layerwise, vae
from hebbret.rules import biohash, hpca  # noqa: E402

NAMES = {
    "none": "None (head on L)",  # the paper's text: a fresh head on layer L, trained from scratch
    "none_full": "None (full net)",  # the authors' code: the whole net trained, scored at bn_L
    "vae": "beta-VAE",
    "hpca": "HPCA",
}
SCHEDULES = {"text": 2, "code": 1}  # halve the lr every 2 epochs (paper text) or every epoch


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="cifar10", choices=["cifar10", "cifar100"])
    parser.add_argument("--dataset", help="dataset spec (default: the experiment's)")
    parser.add_argument("--quick", action="store_true", help="2-core CPU preset")
    parser.add_argument("--seeds", help="comma-separated data seeds")
    parser.add_argument("--regimes", help="comma-separated labelled percentages")
    parser.add_argument("--layers", help="comma-separated layers (1..5)")
    parser.add_argument("--methods", help="comma-separated: none, vae, hpca")
    parser.add_argument("--hebbian-epochs", type=int, help="Hebbian epochs (default: the preset's)")
    parser.add_argument("--out", help="results path without extension")
    parser.add_argument("--checkpoints", help="checkpoint directory (default: checkpoints/<out>)")
    parser.add_argument("--devices", type=int, help="split Hebbian minibatches over N devices")
    parser.add_argument(
        "--lr-schedule",
        choices=sorted(SCHEDULES),
        help="fine-tuning lr after the hold: halved every 2 epochs (the paper's text) or every "
        "epoch (the authors' code); default: the preset's",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command = "python experiments/hpca.py " + shlex.join(argv)

    cfg = get_config(args.experiment, quick=args.quick)
    cfg["dataset"] = args.dataset or cfg["dataset"]
    for name in ("seeds", "regimes", "layers"):
        if getattr(args, name):
            cfg[name] = _ints(getattr(args, name))
    if args.methods:
        cfg["methods"] = tuple(args.methods.split(","))
    if args.lr_schedule is not None:
        cfg["finetune"] = cfg["finetune"] | {"halve_every": SCHEDULES[args.lr_schedule]}
    if args.hebbian_epochs is not None:
        cfg["hebbian"] = cfg["hebbian"] | {"epochs": args.hebbian_epochs}
    unknown = set(cfg["methods"]) - set(NAMES)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}: expected some of {sorted(NAMES)}")
    out = args.out or f"results/hpca_{args.experiment}{'_quick' if args.quick else ''}"
    ckpt_root = pathlib.Path(args.checkpoints or f"checkpoints/{pathlib.Path(out).name}")
    for path in (f"{out}.json", f"{out}.md", ckpt_root / "step"):
        files.check_writable(path)
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        start = time.perf_counter()

        ds = data.load(cfg["dataset"])
        if "train" not in ds.splits or "test" not in ds.splits:
            raise InputError(f"{ds.spec} needs train and test splits, has {sorted(ds.splits)}")
        train, test = ds.splits["train"], ds.splits["test"]
        mesh = biohash.data_mesh(args.devices) if args.devices else None
        ft_cfg = finetune.FinetuneConfig(**cfg["finetune"])
        previous = results.previous_run(out, cfg)
        rows = list(previous["metrics"]["rows"]) if previous else []
        if rows:
            log(f"resuming: {len(rows)} rows already in {out}.json")
        timing: dict[str, list[float]] = {"hebbian_epoch_s": [], "vae_epoch_s": []}

        def save(complete: bool) -> float:
            seconds = time.perf_counter() - start
            record = results.record(
                config=cfg | {"experiment": args.experiment, "quick": args.quick},
                seed=list(cfg["seeds"]),
                metrics={"rows": rows, "summary": summarise(rows, cfg), "timing": timing},
                wall_time_s=seconds,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
            )
            results.write_run(
                out, record, report(args, cfg, rows, timing, seconds), complete=complete
            )
            return seconds

        for seed in cfg["seeds"]:
            split = splits.labelled_split(len(train.x), 1.0, seed, cfg["num_validation"])
            rng = np.random.default_rng(seed)
            mean, std = convnet.channel_stats(train.x[split.train])
            db = split.train[: cfg["database"]]
            val = split.validation[: cfg["val_queries"]]
            q = np.sort(rng.permutation(len(test.x))[: cfg["queries"]])
            database, val_set = (train.x[db], train.y[db]), (train.x[val], train.y[val])
            queries = (test.x[q], test.y[q])
            key = jax.random.key(seed)
            pretrained: dict[str, dict | None] = {"none": None, "none_full": None}
            for method in cfg["methods"]:
                if method in ("none", "none_full") or not _todo(rows, cfg, seed, method):
                    continue
                t = time.perf_counter()
                images = train.x[split.train]
                folder = ckpt_root / f"seed{seed}" / (_hpca_dir(cfg) if method == "hpca" else "vae")
                restored = checkpoints.latest_step(folder) or 0
                if method == "hpca":
                    hcfg = hpca.HebbianConfig(**cfg["hebbian"])
                    pretrained[method] = hpca.pretrain(
                        jax.random.fold_in(key, 1), images, mean, std, hcfg,
                        num_classes=ds.num_classes, mesh=mesh, checkpoint_dir=folder,
                        keep_variance=cfg["hpca_keep_variance"],
                    )  # fmt: skip
                    epochs = hcfg.epochs
                else:
                    vcfg = vae.VAEConfig(**cfg["vae"])
                    pretrained[method], _ = vae.pretrain_vae(
                        jax.random.fold_in(key, 2), images, mean, std, vcfg, checkpoint_dir=folder
                    )
                    epochs = vcfg.epochs
                seconds = time.perf_counter() - t
                restored = min(restored, epochs)
                ran = epochs - restored
                timing.setdefault(f"{method}_total_s", []).append(seconds)
                timing.setdefault(f"{method}_epochs_restored", []).append(restored)
                if ran:  # per-epoch time of the epochs computed here, not of restored ones
                    per_epoch = "hebbian_epoch_s" if method == "hpca" else "vae_epoch_s"
                    timing[per_epoch].append(seconds / ran)
                log(
                    f"seed {seed}: {NAMES[method]} pre-training done ({seconds:.0f} s; "
                    f"{ran} epochs run, {restored} restored from {folder})"
                )
            for regime in cfg["regimes"]:
                n_lab = max(1, round(regime / 100 * len(split.train)))
                lab = split.train[:n_lab]
                ids = {"seed": seed, "regime": regime, "labelled": n_lab}
                common = dict(num_classes=ds.num_classes, nystroem_components=cfg["nystroem"])
                sets = (train.x[lab], train.y[lab]), val_set, database, queries, mean, std, ft_cfg
                for method in cfg["methods"]:
                    todo = [
                        layer
                        for layer in cfg["layers"]
                        if not _done(rows, seed, regime, method, layer)
                    ]
                    if method == "none_full" and todo:  # one network scored at every layer
                        t = time.perf_counter()
                        new = layerwise.evaluate_full_network(
                            jax.random.fold_in(key, 1000 * regime), todo, *sets, seed=seed, **common
                        )
                        seconds = (time.perf_counter() - t) / len(new)
                        rows += [ids | {"method": method} | r | {"seconds": seconds} for r in new]
                        for r in new:
                            log(_line(ids | {"method": method} | r))
                        save(complete=False)
                        continue
                    for layer in todo:
                        t = time.perf_counter()
                        row = layerwise.evaluate_layer(
                            jax.random.fold_in(key, 1000 * regime + layer), layer,
                            pretrained[method], *sets, seed=seed, **common,
                            keep_variance=method == "hpca" and cfg["hpca_keep_variance"],
                        )  # fmt: skip
                        row = ids | {"method": method} | row | {"seconds": time.perf_counter() - t}
                        rows.append(row)
                        log(_line(row))
                        save(complete=False)
        seconds = save(complete=True)
        log(f"wrote {out}.json and {out}.md ({seconds / 60:.1f} min)")
        return 0
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"the rows finished so far are in {out}.json; rerun the same command to resume"
        ) from None


def _line(row: dict) -> str:
    return (
        f"seed {row['seed']} {row['regime']:>3} % ({row['labelled']} labels) "
        f"{NAMES[row['method']]:<16} layer {row['layer']}: mAP@100 {row['map']:.2f} "
        f"(Nystroem {row.get('map_nystroem', 0):.2f}), mAP@R {row['map_R']:.2f}, "
        f"val mAP@100 {row['val_map']:.2f}, val acc {row['val_accuracy']:.1f} %"
    )


def _hpca_dir(cfg: dict) -> str:
    """Checkpoint folder name of the Hebbian run: settings that change its trajectory (not the
    epoch count, so more epochs resume from fewer)."""
    lr, batch = cfg["hebbian"]["lr"], cfg["hebbian"]["batch"]
    return f"hpca_lr{lr:g}_b{batch}" + ("_kv" if cfg["hpca_keep_variance"] else "")


def _done(rows: list[dict], seed: int, regime: int, method: str, layer: int) -> bool:
    return any(
        (r["seed"], r["regime"], r["method"], r["layer"]) == (seed, regime, method, layer)
        for r in rows
    )


def _todo(rows: list[dict], cfg: dict, seed: int, method: str) -> bool:
    return not all(
        _done(rows, seed, regime, method, layer)
        for regime in cfg["regimes"]
        for layer in cfg["layers"]
    )


def summarise(rows: list[dict], cfg: dict) -> list[dict]:
    """Per (method, regime): the validation-chosen layer of every seed, and the mean and 95 % CI
    over seeds of its test mAP (Euclidean and Nystroem)."""
    out = []
    for method in cfg["methods"]:
        for regime in cfg["regimes"]:
            chosen = []
            for seed in cfg["seeds"]:
                mine = [
                    r
                    for r in rows
                    if (r["method"], r["regime"], r["seed"]) == (method, regime, seed)
                ]
                if len(mine) == len(cfg["layers"]):
                    chosen.append(layerwise.select_layer(mine))
            if not chosen:
                continue
            entry = {"method": method, "regime": regime, "seeds": [r["seed"] for r in chosen]}
            entry["layers"] = [r["layer"] for r in chosen]
            for metric in ("map", "map_nystroem", "map_R", "map_nystroem_R", "map_all"):
                if all(metric in r for r in chosen):
                    mean, half = layerwise.confidence_interval([r[metric] for r in chosen])
                    entry[metric] = mean
                    entry[f"{metric}_ci95"] = half
            out.append(entry)
    return out


def _paper(cfg: dict, method: str, regime: int) -> float | None:
    table = (
        published.LAGANI_CIFAR10_TABLE1
        if cfg["paper"] == "cifar10"
        else published.LAGANI_CIFAR100_TABLE2
    )
    if regime not in published.LAGANI_REGIMES:
        return None
    return table[method.removesuffix("_full")][published.LAGANI_REGIMES.index(regime)]


def _count(n: int | None) -> str:
    return "all" if n is None else f"{n:,}"


def report(args, cfg: dict, rows: list[dict], timing: dict, seconds: float) -> str:
    """Markdown: command, protocol, Table 1/2 (ours, paper's in brackets), per-layer rows."""
    label = "CIFAR-10 (JPEG)" if "cifar10-jpeg" in cfg["dataset"] else cfg["dataset"]
    summary = summarise(rows, cfg)
    regimes = list(cfg["regimes"])
    seeds = ",".join(str(s) for s in cfg["seeds"])
    lines = [
        f"`{args.command}`",
        "",
        f"{label}. Split: the training images shuffled by the data seed, the last "
        f"{cfg['num_validation']:,} validation, the first labelled (not stratified). Database: "
        f"{_count(cfg['database'])} training images; queries: {_count(cfg['queries'])} test "
        "images. "
        "mAP@100 (percent), AP normalised by min(100, relevant) (the authors' MAPMetric at the "
        "paper's tag); ranking of layer-L features (after BN) by Euclidean distance (the "
        "paper's text) or after a Nystroem RBF map (the authors' code); the layer chosen on "
        "validation mAP@100 (Euclidean). None (head on L): a fresh head on layer L, trained "
        "from scratch (the paper's text); None (full net): the whole network trained once on "
        "the labels and scored at bn_L (the authors' code). Fine-tuning lr halved every "
        f"{cfg['finetune']['halve_every']} epoch(s) after epoch {cfg['finetune']['hold']}; "
        f"mean +- 95 % CI over seeds {seeds}. Paper's number in brackets. "
        f"Hebbian epochs {cfg['hebbian']['epochs']}, fine-tuning epochs "
        f"{cfg['finetune']['epochs']}. Wall time {seconds / 60:.1f} min on {os.cpu_count()} CPU "
        "cores.",
        "",
    ]
    tables = (
        ("map", "Euclidean, mAP@100 (Table 1's metric)"),
        ("map_nystroem", "Nystroem RBF (1,000 components), mAP@100"),
        ("map_R", "Euclidean, mAP@R (R = database items per class)"),
        ("map_all", "Euclidean, mAP@All (the whole database ranked)"),
    )
    for metric, title in tables:
        lines += [f"**{title}**", ""]
        lines += ["| pre-training | " + " | ".join(f"{p} %" for p in regimes) + " |"]
        lines += ["|---|" + "---:|" * len(regimes)]
        for method in cfg["methods"]:
            cells = []
            for regime in regimes:
                hit = [s for s in summary if (s["method"], s["regime"]) == (method, regime)]
                text = ""
                if hit and metric in hit[0]:
                    s = hit[0]
                    text = f"{s[metric]:.2f}"
                    text += f" +- {s[metric + '_ci95']:.2f}" if len(s["seeds"]) > 1 else ""
                    text += f" (L{'/'.join(str(v) for v in s['layers'])})"
                ref = _paper(cfg, method, regime) if metric in ("map", "map_nystroem") else None
                cells.append(text + (f" [{ref:.2f}]" if ref is not None else ""))
            lines.append(f"| {NAMES[method]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Every run (layer-wise evaluation):",
        "",
        "| seed | labels | method | layer | mAP@20 / 50 / 100 | Nystroem mAP@100 | mAP@R | "
        "mAP@All | val mAP@100 | val acc | best epoch | time (s) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['seed']} | {r['regime']} % ({r['labelled']:,}) | {NAMES[r['method']]} | "
        f"{r['layer']} | {' / '.join(f'{v:.2f}' for v in r['map_at'].values())} | "
        f"{r.get('map_nystroem', float('nan')):.2f} | {r['map_R']:.2f} | "
        f"{r.get('map_all', float('nan')):.2f} | {r['val_map']:.2f} | {r['val_accuracy']:.1f} | "
        f"{r['best_epoch']} | {r['seconds']:.0f} |"
        for r in rows
    ]
    if any(timing.values()):
        lines += [
            "",
            "Pre-training, per seed (seconds; per-epoch times count only the epochs computed in "
            "this run, not those restored from checkpoints):",
        ]
        lines += [
            f"- {k}: {', '.join(f'{v:.0f}' for v in vals)}" for k, vals in timing.items() if vals
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_command("experiments/hpca.py", main))
