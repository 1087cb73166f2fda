"""Lagani et al. study report: Table 1 / 2 summary (validation-chosen layer, mean and 95 % CI
over seeds) and the markdown table next to the paper's numbers."""

from __future__ import annotations

import os

from hebbret import published
from hebbret.data import Dataset
from hebbret.nets import layerwise

NAMES = {
    "none": "None (head on L)",  # the paper's text: a fresh head on layer L, trained from scratch
    "none_full": "None (full net)",  # the authors' code: the whole net trained, scored at bn_L
    "vae": "beta-VAE",
    "hpca": "HPCA",
}


def line(row: dict) -> str:
    """One progress line for a finished row."""
    return (
        f"seed {row['seed']} {row['regime']:>3} % ({row['labelled']} labels) "
        f"{NAMES[row['method']]:<16} layer {row['layer']}: mAP@100 {row['map']:.2f} "
        f"(Nystroem {row.get('map_nystroem', 0):.2f}), mAP@R {row['map_R']:.2f}, "
        f"val mAP@100 {row['val_map']:.2f}, val acc {row['val_accuracy']:.1f} %"
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


def report(
    command: str, cfg: dict, ds: Dataset, rows: list[dict], timing: dict, seconds: float
) -> str:
    """Markdown: command, protocol, Table 1/2 (ours, paper's in brackets), per-layer rows."""
    summary = summarise(rows, cfg)
    regimes = list(cfg["regimes"])
    seeds = ",".join(str(s) for s in cfg["seeds"])
    lines = [
        f"`{command}`",
        "",
        f"{ds.label}. Split: the training images shuffled by the data seed, the last "
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
