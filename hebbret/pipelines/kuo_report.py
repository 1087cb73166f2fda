"""Kuo, Chou & Chang study report: accuracy in the paper's Table 2 / 3 layout and retrieval in its
Table 4 / 5 layout, the paper's numbers beside ours."""

from __future__ import annotations

import os

from hebbret import published
from hebbret.data import Dataset

NAMES = {
    "plain": "CNN_RGB",
    "da": "CNN_RGB + DA",
    "pretrain": "Pre-train + CNN_RGB",
    "both": "Pre-train + CNN_RGB + DA",
}
PROTOCOL_NAMES = {
    "test_vs_train": "test queries vs the training images",
    "test_vs_test": "test queries vs the other test images (leave-one-out)",
}


def _paper_key(cfg: dict) -> str | None:
    """``cifar10`` / ``cifar100`` when the study runs one of the paper's datasets."""
    return cfg["experiment"] if cfg["experiment"] in published.KUO_ACCURACY else None


def line(row: dict) -> str:
    """One progress line for a finished row."""
    if row["kind"] == "accuracy":
        return (
            f"{row['variant']}: test accuracy top-1 {row['top1']:.2f}, top-2 {row['top2']:.2f}, "
            f"top-3 {row['top3']:.2f} ({row['train_s'] / 60:.1f} min)"
        )
    return (
        f"{row['variant']} {row['protocol']} {row['distance']}: mAP {row['map']:.2f}, "
        f"P@10 {row['p_at_10']:.2f}; {1e3 * row['kernel_s_per_query']:.3f} ms/query (kernel) vs "
        f"{1e3 * row['numpy_s_per_query']:.1f} ms/query (numpy loop)"
    )


def report(command: str, cfg: dict, ds: Dataset, rows: list[dict], seconds: float) -> str:
    """Markdown: command, protocol, the accuracy table, one retrieval table per protocol."""
    key = _paper_key(cfg)
    rows = sorted(rows, key=lambda r: list(NAMES).index(r["variant"]))  # stable: distance order
    tr, s = cfg["train"], cfg["sae"]
    n = cfg["train_images"] or "all"
    lines = [
        f"`{command}`",
        "",
        f"{ds.label}; training images: {n}; seed {cfg['seed']}. CNN: 3 x (5x5 conv, 2x2 max-pool, "
        f"ReLU), 400-d fc, softmax; SGD (Nesterov momentum {tr['momentum']}, weight decay "
        f"{tr['weight_decay']:g}), lr {tr['lr']:g} divided by 10 at 60 % and 85 % of "
        f"{tr['epochs']} epochs, batch {tr['batch']}. DA: random horizontal flips + grey and "
        "equalised-grey channels (5-channel input). Pre-train: a sparse auto-encoder "
        f"({s['hidden']} sigmoid units, rho {s['rho']}, beta {s['beta']}) on {s['patches']:,} "
        f"ZCA-whitened grey 5x5 patches gives conv1 (first layer: `{s['first_layer']}`). "
        f"Wall time {seconds / 60:.1f} min on {os.cpu_count()} CPU cores.",
        "",
        "**Test accuracy (%)** (paper in brackets"
        + ("" if key else ": none for this dataset")
        + ")",
        "",
        "| model | top-1 | top-2 | top-3 | train (min) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["kind"] != "accuracy":
            continue
        paper = published.KUO_ACCURACY[key][r["variant"]] if key else (None,) * 3
        cells = [
            f"{r[f'top{k}']:.2f}" + (f" ({p})" if p is not None else "")
            for k, p in zip((1, 2, 3), paper, strict=True)
        ]
        restored = r.get("epochs_restored", 0)
        minutes = f"{r['train_s'] / 60:.1f}" + (
            f" ({restored} epochs restored)" if restored else ""
        )
        lines.append(f"| {NAMES[r['variant']]} | {' | '.join(cells)} | {minutes} |")
    for protocol in cfg["protocols"]:
        mine = [r for r in rows if r["kind"] == "retrieval" and r["protocol"] == protocol]
        if not mine:
            continue
        first = mine[0]
        lines += [
            "",
            f"**Retrieval, {PROTOCOL_NAMES[protocol]}**: {first['queries']:,} queries, "
            f"{first['database']:,} database items; mAP (%) over the whole database; seconds per "
            f"query of matching: our jitted kernel (all queries) and a per-query numpy loop "
            f"(distance + full argsort, the first {first['numpy_queries']} queries; their AP "
            "equals the kernel's to `max AP diff`). Paper (pre-train + DA, CIFAR; mAP x 100, "
            "s/query on their CPU) in brackets. mAP@30 / @1000: AP over the top 30 / 1,000 "
            "normalised by the relevant items among them (the short-list convention).",
            "",
            "| model | distance | mAP | mAP@30 | mAP@1000 | P@10 | kernel s/query | "
            "numpy s/query | numpy / kernel | max AP diff |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mine:
            paper = published.KUO_RETRIEVAL[key][r["distance"]] if key else None
            show = paper is not None and r["variant"] == "both"
            ratio = r["numpy_s_per_query"] / r["kernel_s_per_query"]
            lines.append(
                f"| {NAMES[r['variant']]} | {r['distance']} | {r['map']:.2f}"
                + (f" ({100 * paper[0]:.1f})" if show else "")
                + "".join(f" | {_at(r, depth)}" for depth in ("30", "1000"))
                + f" | {r['p_at_10']:.2f} | {r['kernel_s_per_query']:.2e} | "
                f"{r['numpy_s_per_query']:.2e}"
                + (f" ({paper[1]})" if show else "")
                + f" | {ratio:.3g}x | {r['max_ap_diff']:.1e} |"
            )
    lines += _retrained(rows)
    return "\n".join(lines) + "\n"


def _retrained(rows: list[dict]) -> list[str]:
    """A note for each variant whose retrieval rows come from a network of another top-1 than its
    accuracy row's (trained again after its checkpoint was lost, or by changed code)."""
    top1 = {r["variant"]: r["top1"] for r in rows if r["kind"] == "accuracy"}
    other = set()
    for r in rows:
        if r["kind"] == "retrieval" and r["variant"] in top1 and "network_top1" in r:
            if abs(r["network_top1"] - top1[r["variant"]]) > 1e-9:
                other.add((r["variant"], r["network_top1"]))
    return [
        f"\n**Note:** the retrieval rows of {NAMES[v]} come from a network of top-1 {t:.2f}, "
        f"not the {top1[v]:.2f} above (trained again after its checkpoint was lost?)."
        for v, t in sorted(other)
    ]


def _at(row: dict, depth: str) -> str:
    """mAP over the top ``depth`` of a retrieval row; "-" for rows recorded without it."""
    value = row.get("map_at", {}).get(depth)
    return "-" if value is None else f"{value:.2f}"
