"""Tzelepi & Tefas study report: rows in the paper's Table 7 / 8 layout, the paper's numbers
beside ours, and a query-expansion table."""

from __future__ import annotations

import os

from hebbret import published
from hebbret.data import Dataset

# our starting networks and the paper's that play the same part
PAPER_START = {"hpca": "caffenet", "supervised": "kevinnet"}
START_NAMES = {"hpca": "HPCA net (no labels)", "supervised": "supervised net (all labels)"}
# our cuts that are the paper's FC6 (FC6; FC6) and (FC6,FC7; FC7) rows
PAPER_CUT = {"conv4:conv4": "fc6", "conv4+fc5:fc5": "fc7"}


def paper(row: dict) -> tuple[float, float] | None:
    """The paper's (mAP, mAP@50) for the row's start, cut and scheme, or None."""
    table = published.TZELEPI_CIFAR10[PAPER_START[row["start"]]]
    return table.get((PAPER_CUT.get(row["cut"], ""), row["scheme"]))


def line(row: dict) -> str:
    """One progress line for a finished row."""
    if "precision_at_3" in row:
        p3 = " -> ".join(f"{v:.1f}" for v in row["precision_at_3"])
        return f"{row['start']} {row['cut']} iterative RF: users' precision@3 {p3}"
    return (
        f"{row['start']} {row['cut']} {row['scheme']}: mAP {row['map']:.2f}, "
        f"mAP@50 {row['map50']:.2f}; QE {row['qe_map']:.2f} / {row['qe_map50']:.2f}"
    )


def _cell(row: dict, key: str) -> str:
    if key not in row:
        return ""
    std = row.get(f"{key}_std")
    return f"{row[key]:.2f}" + (f" +- {std:.2f}" if std is not None else "")


def _train_time(row: dict, cfg: dict) -> str:
    """Seconds of training, or "restored" when every epoch came from a checkpoint."""
    if row["scheme"] != "baseline" and row.get("epochs_restored") == cfg["retrain"]["epochs"]:
        return "restored"
    return f"{row.get('train_s', 0):.0f}"


def report(
    command: str, cfg: dict, ds: Dataset, rows: list[dict], timing: dict, seconds: float
) -> str:
    """Markdown: command, protocol, one table per starting network, QE / SVQE, timings."""
    rt = cfg["retrain"]
    lines = [
        f"`{command}`",
        "",
        f"{ds.label}. Database: {cfg['database']:,} training images; queries: "
        f"{cfg['query_sets']} set(s) of {cfg['queries']:,} random test images (mean +- std over "
        "sets). mAP (percent) over the whole database normalised by all relevant items "
        "(Tzelepi eq. 18); mAP@50 normalised by the relevant items retrieved; Euclidean "
        f"distance. Retraining: Adam lr {rt['lr']:g}, batch {rt['batch']}, {rt['epochs']} epochs; "
        f"FU n = {cfg['fu']['n']}, eta = {cfg['fu']['eta']}; RRI beta = {cfg['rri']['beta']}, "
        f"{cfg['rri']['n']} nearest irrelevant; RF {cfg['rf']['users']} users (the first query "
        f"set's queries), {cfg['rf']['relevant']} relevant + {cfg['rf']['irrelevant']} "
        f"irrelevant, alpha = {cfg['rf']['alpha']}. QE: top {cfg['qe_top']}. Cut "
        "`conv4+fc5:fc5` = the paper's (FC6,FC7; FC7), `conv4:conv4` = (FC6; FC6). Paper's "
        "numbers in brackets: our HPCA net stands for their CaffeNet (Table 7: weights learnt "
        "without these labels), our supervised net for their KevinNet (Table 8: trained on "
        f"CIFAR-10). Wall time {seconds / 60:.1f} min on {os.cpu_count()} CPU cores.",
        "",
    ]
    for start in cfg["starts"]:
        mine = [r for r in rows if r["start"] == start and "precision_at_3" not in r]
        if not mine:
            continue
        lines += [
            f"**{START_NAMES[start]}** (paper: {PAPER_START[start]})",
            "",
            "| scheme | representation | mAP | mAP@50 | paper mAP | paper mAP@50 | QE mAP | "
            "QE mAP@50 | train (s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in mine:
            ref = paper(r)
            refs = (f"[{ref[0]:.2f}]", f"[{ref[1]:.2f}]") if ref else ("", "")
            target = r["cut"].split(":")[1]
            chain = " -> ".join(f"{s}{r['representation']}" for s in r["scheme"].split("+"))
            rep = (
                f"{start} => {target}"
                if r["scheme"] == "baseline"
                else f"{start} -> {chain} => {target}"
            )
            lines.append(
                f"| {r['scheme']} | {rep} | {_cell(r, 'map')} | {_cell(r, 'map50')} | "
                f"{refs[0]} | {refs[1]} | {_cell(r, 'qe_map')} | {_cell(r, 'qe_map50')} | "
                f"{_train_time(r, cfg)} |"
            )
        lines.append("")
    it = [r for r in rows if "precision_at_3" in r]
    if it:
        rounds = len(it[0]["precision_at_3"]) - 1
        lines += [
            f"**Iterative RF** (§5.5): {rounds} rounds, each user marks "
            f"{cfg['iterative_rf']['relevant']} relevant + {cfg['iterative_rf']['irrelevant']} "
            f"irrelevant unjudged items, {cfg['iterative_rf']['epochs']} epochs a round; the "
            "users' precision@3 (percent) before and after each round (the paper, on Holidays: "
            "Fig. 20, rising from the first round)",
            "",
            "| start | cut | " + " | ".join(f"round {i}" for i in range(rounds + 1)) + " | mAP |",
            "|---|---|" + "---:|" * (rounds + 2),
        ]
        lines += [
            f"| {r['start']} | {r['cut']} | "
            + " | ".join(f"{v:.1f}" for v in r["precision_at_3"])
            + f" | {r['map']:.2f} |"
            for r in it
        ]
        lines.append("")
    tops = cfg["qe_ablation"]
    if tops:
        plain = [r for r in rows if "precision_at_3" not in r]
        lines += [
            "**Query expansion by list length** (mAP; QE@k averages the query with its top k; "
            "P@10: precision of the plain top 10)",
            "",
            "| start | cut | scheme | P@10 | mAP | "
            + " | ".join(f"QE@{k}" for k in (*tops, cfg["qe_top"]))
            + " |",
            "|---|---|---|---:|---:|" + "---:|" * (len(tops) + 1),
        ]
        lines += [
            f"| {r['start']} | {r['cut']} | {r['scheme']} | {_cell(r, 'p10')} | "
            f"{_cell(r, 'map')} | "
            + " | ".join(_cell(r, f"qe{k}_map") for k in tops)
            + f" | {_cell(r, 'qe_map')} |"
            for r in plain
        ]
        lines.append("")
    sv = [r for r in rows if "svqe_map" in r]
    if sv:
        lines += [
            "**Spatial verification + QE** (9 half-size crops of each of the top "
            f"{cfg['svqe_shortlist']}, re-ranked, then QE)",
            "",
            "| start | cut | scheme | mAP | QE | SVQE | mAP@50 | QE | SVQE |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['start']} | {r['cut']} | {r['scheme']} | {_cell(r, 'map')} | "
            f"{_cell(r, 'qe_map')} | {_cell(r, 'svqe_map')} | {_cell(r, 'map50')} | "
            f"{_cell(r, 'qe_map50')} | {_cell(r, 'svqe_map50')} |"
            for r in sv
        ]
        lines.append("")
    lines += ["Stage times (seconds): targets / training / evaluation per row, starting networks:"]
    lines += [
        f"- {r['start']} {r['cut']} {r['scheme']}: targets {r.get('targets_s', 0):.1f}, "
        f"training {_train_time(r, cfg)} ({r.get('pairs', 0):,} pairs, loss "
        f"{r.get('loss_first') or 0:.4g} -> {r.get('loss_last') or 0:.4g}), "
        f"evaluation {r['eval_s']:.0f}"
        for r in rows
        if "precision_at_3" not in r
    ]
    lines += [f"- {k}: {v:.0f}" for k, v in timing.items()]
    return "\n".join(lines) + "\n"
