"""Gosthipaty study report: NMI / RI next to the report's numbers, plain vs cluster-then-rank mAP,
and the search time each costs."""

from __future__ import annotations

import os

from hebbret import published
from hebbret.data import Dataset

PROTOCOL_NAMES = {
    "paper": "the report's split: 300 random images per class as queries, the rest the database",
    "biohash": "the library's CIFAR-10 protocol: 1,000 per class as queries, the other 50k",
}


def line(row: dict) -> str:
    """One progress line for a finished row."""
    return (
        f"{row['protocol']} {row['variant']}: NMI {row['nmi_db']:.3f}, RI {row['ri_db']:.3f}; "
        f"mAP {row['map']:.2f} (cluster-then-rank {row['cluster_map']:.2f}, scanning "
        f"{100 * row['scanned']:.0f} %); test MSE {row['test_mse']:.4f}"
    )


def report(command: str, cfg: dict, ds: Dataset, rows: list[dict], seconds: float) -> str:
    """Markdown: command, settings, one table per protocol."""
    tr = cfg["train"]
    lines = [
        f"`{command}`",
        "",
        f"{ds.label}, pooled; seed {cfg['seed']}. Convolutional auto-encoder (3 Conv-BN-ReLU + "
        "max-pool blocks, a 4x4x16 bottleneck = 256-d embedding, up-sampling decoder); Adam lr "
        f"{tr['lr']:g}, batch {tr['batch']}, {tr['epochs']} epochs on the database images; "
        f"supervised: + cross-entropy of a head on the bottleneck (weight {tr['weight']:g}). "
        f"k-means: {cfg['clusters']} clusters (scikit-learn, random_state = seed) of the database "
        "embeddings. NMI / RI of the k-means clusters against the labels, on the database "
        "(what the report scores) and on the queries (assigned to the nearest centre). mAP (%) "
        "over the whole database (normalised by all relevant items) of Euclidean ranking, and of "
        "cluster-then-rank: the query's cluster first by distance, then every other item by "
        "distance. Search: seconds per query of a top-100 search over the whole database vs over "
        f"the query's cluster only. Wall time {seconds / 60:.1f} min on {os.cpu_count()} CPU "
        "cores.",
    ]
    paper = published.GOSTHIPATY_CIFAR10
    for protocol in cfg["protocols"]:
        mine = [r for r in rows if r["protocol"] == protocol]
        if not mine:
            continue
        lines += [
            "",
            f"**{PROTOCOL_NAMES[protocol]}** ({mine[0]['queries']:,} queries, "
            f"{mine[0]['database']:,} database items; the report's NMI / RI in brackets)",
            "",
            "| auto-encoder | NMI (db) | RI (db) | NMI (queries) | RI (queries) | mAP | P@10 | "
            "cluster-then-rank mAP | P@10 | scanned | search ms/query: all / cluster | test MSE "
            "| head acc. | train (min) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mine:
            nmi, ri = paper[r["variant"]]
            head = f"{r['head_accuracy']:.1f}" if "head_accuracy" in r else ""
            lines.append(
                f"| {r['variant']} | {r['nmi_db']:.3f} ({nmi}) | {r['ri_db']:.3f} ({ri}) | "
                f"{r['nmi_queries']:.3f} | {r['ri_queries']:.3f} | {r['map']:.2f} | "
                f"{r['p_at_10']:.2f} | {r['cluster_map']:.2f} | {r['cluster_p_at_10']:.2f} | "
                f"{100 * r['scanned']:.1f} % | {1e3 * r['search_s_per_query']:.3f} / "
                f"{1e3 * r['cluster_search_s_per_query']:.3f} | {r['test_mse']:.4f} | {head} | "
                f"{r['train_s'] / 60:.1f} |"
            )
    return "\n".join(lines) + "\n"
