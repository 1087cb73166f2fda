"""BioConvHash study report: the mAP table next to the paper's (Tables 2, 3, 6), filters,
features and BioHash-layer timings, as markdown."""

from __future__ import annotations

import os

from hebbret import published
from hebbret.pipelines import compare


def _paper(cfg: dict, method: str, k: int, shadows: bool, k_ci: int | None = None):
    if cfg["paper"] == "none":  # a dataset the paper did not use (e.g. a stand-in)
        return None
    if cfg["paper"] == "mnist":
        table, ks = published.BIOHASH_MNIST_TABLE1, published.BIOHASH_KS
        if shadows:
            return None
    elif k_ci is not None:
        table = published.BIOCONVHASH_CIFAR10_TABLE3
        ks, method = published.BIOCONVHASH_TABLE3_KS, k_ci
    else:
        table = published.BIOHASH_CIFAR10_TABLE6 if shadows else published.BIOHASH_CIFAR10_TABLE2
        ks = published.BIOHASH_KS
    values = table.get(method)
    return values[list(ks).index(k)] if values and k in ks else None


def _cap(cfg: dict) -> str:
    cap = cfg.get("layer_max_epochs")
    if cap is None:
        return ""
    return (
        f", layers stopped after at most {cap} epochs (the paper's rule: until the mean norm is "
        f"below {cfg['rule']['norm_target']}, at most {cfg['rule']['max_epochs']})"
    )


def _bracket(cfg: dict) -> str:
    if cfg["paper"] == "none":
        return "No paper's numbers: the paper did not use this dataset. "
    return f"Paper's number in brackets (F = {400 if cfg['paper'] == 'cifar10' else 500}). "


def report(command: str, cfg: dict, ds, proto, rows: list, info: dict, seconds: float) -> str:
    """Markdown: the command, the protocol, the mAP table next to the paper's, the timings."""
    conv = cfg["conv"]
    lines = [
        f"`{command}`",
        "",
        f"{ds.label}; {proto.name}; mAP@{proto.R or 'All'} (percent) by Hamming ranking, AP "
        "normalised by the relevant items retrieved in the top R (BioHash eq. 12), ties exact. "
        f"Front end: F = {conv['filters']} filters for each K in {list(conv['kernels'])}, "
        f"{conv['patches']:,} training patches each, pool {conv['pool']} stride {conv['stride']}; "
        f"BioHash layer activity {100 * cfg['activity']:.2f} %{_cap(cfg)}. {_bracket(cfg)}Wall "
        f"time {seconds / 60:.1f} min on {os.cpu_count()} CPU cores.",
        "",
    ]
    ks = list(cfg["ks"])
    sweep = len(cfg["k_cis"]) > 1
    lines += ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    groups = []
    for r in rows:
        for qs in ("clean", "shadows"):
            key = (r["method"], r.get("k_ci"), qs)
            if qs in r and key not in groups:
                groups.append(key)
    for method, k_ci, qs in groups:
        cells = []
        for k in ks:
            hit = [r for r in rows if (r["method"], r.get("k_ci"), r["k"]) == (method, k_ci, k)]
            text = f"{hit[0][qs]:.2f}" if hit else ""
            ref = _paper(cfg, method, k, qs == "shadows", k_ci if sweep else None)
            cells.append(text + (f" ({ref:.2f})" if ref is not None else ""))
        name = compare.DISPLAY_NAMES[method] + (" (pixels)" if method == "biohash" else "")
        name += f", k_CI = {k_ci}" if sweep else ""
        name += ", shadows" if qs == "shadows" else ""
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Filters (Krotov-Hopfield rule on unit patches):", ""]
    lines += [
        "| K | F | patches | epochs | final mean norm | time (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f['kernel']} | {f['filters']} | {f['patches']:,} | {f['epochs']} | "
        f"{f['mean_norm']:.3f} | {f['seconds']:.1f} |"
        for f in info["filters"]
    ]
    lines += [
        "",
        "| k_CI | feature dim D | images | images / s | nonzero |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f['k_ci']} | {f['dim']:,} | {f['images']:,} | {f['images_per_s']:.0f} | "
        f"{100 * f['nonzero_fraction']:.1f} % |"
        for f in info["features"]
    ]
    lines += [
        "",
        "BioHash layers (training time on this machine's CPU):",
        "",
        "| method | k_CI | k | m | epochs | final mean norm | fit time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method']} | {r.get('k_ci', '-')} | {r['k']} | {r['bits']} | {r['epochs']} | "
        f"{r['mean_norm']:.3f} | {r['fit_s']:.1f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
