"""Reproduce BioHash's tables (Ryali et al.): hashing mAP on raw pixels, methods x hash length.

    python experiments/biohash.py --experiment table2 [--quick] [--dataset DATASET] [--seed 0]

Writes ``results/biohash_<experiment>[_quick].json`` (results record) and ``.md`` (our mAP with
the paper's in brackets). See experiments/configs/biohash.py for the settings of each experiment.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from configs.biohash import get_config  # noqa: E402

from hebbret import data, files, hashing, plots, published, results  # noqa: E402
from hebbret.data import splits  # noqa: E402
from hebbret.errors import run_command  # noqa: E402
from hebbret.pipelines import compare  # noqa: E402
from hebbret.rules import biohash  # noqa: E402


def build_protocol(ds: data.Dataset, cfg: dict, seed: int) -> splits.Protocol:
    """The experiment's protocol (:func:`hebbret.data.splits.class_query_protocol`)."""
    return splits.class_query_protocol(
        ds,
        cfg["queries_per_class"],
        cfg["R"],
        seed,
        query_subset=cfg.get("query_subset"),
        validation=100 if cfg.get("validation") else None,
        shadows=cfg["shadows"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", default="table2", choices=["table2", "table1", "shadows", "activity"]
    )
    parser.add_argument("--dataset", help="dataset spec (default: the experiment's)")
    parser.add_argument("--quick", action="store_true", help="2-core CPU preset (minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="results path without extension")
    parser.add_argument("--methods", help="comma-separated subset (default: the experiment's)")
    parser.add_argument("--ks", help="comma-separated hash lengths (default: the experiment's)")
    parser.add_argument(
        "--init-norm",
        type=float,
        help="ablation: BioHash W0 rows rescaled to "
        "this norm instead of N(0, 1) (the paper's init)",
    )
    parser.add_argument("--eps0", type=float, help="ablation: initial learning rate (paper 0.02)")
    parser.add_argument("--max-epochs", type=int, help="ablation: cap on BioHash epochs")
    parser.add_argument(
        "--norm-target",
        type=float,
        help="ablation: stop below this mean norm "
        "(paper 1.06; 0 = always run the preset's max epochs)",
    )
    args = parser.parse_args(argv)

    cfg = get_config(args.experiment, quick=args.quick)
    cfg["dataset"] = args.dataset or cfg["dataset"]
    if args.max_epochs is not None:
        cfg["max_epochs"] = args.max_epochs
    if args.methods:
        cfg["methods"] = tuple(m.strip() for m in args.methods.split(","))
    if args.ks:
        cfg["ks"] = tuple(int(k) for k in args.ks.split(","))
    out = args.out or f"results/biohash_{args.experiment}{'_quick' if args.quick else ''}"
    for suffix in (".json", ".md", ".png"):
        files.check_writable(f"{out}{suffix}")
    rows: list[dict] = []
    try:
        start = time.perf_counter()
        ds = data.load(cfg["dataset"])
        proto = build_protocol(ds, cfg, args.seed)
        print(f"{ds.spec}: {proto.name}, R = {proto.R or 'All'}", flush=True)
        rule = biohash.RuleConfig(max_epochs=cfg["max_epochs"], init_norm=args.init_norm)
        for field in ("eps0", "norm_target"):
            if getattr(args, field) is not None:
                rule = rule._replace(**{field: getattr(args, field)})
        paper = getattr(published, cfg["paper"]) if cfg["paper"] else None

        def save(rows: list[dict], complete: bool) -> float:
            """Write the record and table so far (after every method: a long run keeps its rows)."""
            seconds = time.perf_counter() - start
            record = results.record(
                config=cfg
                | {
                    "experiment": args.experiment,
                    "quick": args.quick,
                    "tie": "exact",
                    "normaliser": "retrieved",
                    "rule": rule._asdict(),
                },
                seed=args.seed,
                metrics={"rows": rows, "protocol": proto.name},
                wall_time_s=seconds,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
            )
            text = report(args, cfg, proto, rows, paper, seconds)
            results.write_run(out, record, text, complete=complete)
            if cfg["activities"] and complete:
                fig = plots.sweep(
                    [100 * r["activity"] for r in rows],
                    [r["map"] for r in rows],
                    xlabel="activity k / m (%)",
                    ylabel=f"mAP@{proto.R or 'All'} (%), validation",
                    logx=True,
                    title=f"BioHash activity sweep, k = {rows[0]['k']}",
                )
                files.atomic_write(f"{out}.png", lambda f: fig.savefig(f, format="png", dpi=120))
            return seconds

        grid = []  # (activity, method, ks), every cell checked before the first fit
        for activity in cfg["activities"] or (cfg["activity"],):
            hcfg = hashing.HashConfig(k=1, activity=activity, rule=rule, seed=args.seed)
            for method in cfg["methods"]:
                max_k = cfg.get("max_k", {}).get(method, max(cfg["ks"]))
                ks = [k for k in cfg["ks"] if k <= max_k]
                compare.check([method], ks, hcfg, proto.xb.shape)
                grid.append((hcfg, method, ks))
        for hcfg, method, ks in grid:
            for row in compare.iter_rows(
                proto,
                methods=(method,),
                ks=ks,
                config=hcfg,
                progress=True,
                log=lambda line: print(line, flush=True),
            ):
                rows.append(row | {"activity": hcfg.activity})
                save(rows, complete=False)
        seconds = save(rows, complete=True)
        print(f"wrote {out}.json and {out}.md ({seconds:.0f} s)")
        return 0
    except KeyboardInterrupt:
        kept = f"the {len(rows)} finished rows are in {out}.json (marked partial)"
        raise KeyboardInterrupt(kept if rows else "no row had finished") from None


def report(args, cfg, proto, rows, paper, seconds) -> str:
    """Markdown: the command, the protocol, the table next to the paper, BioHash training."""
    label = "CIFAR-10 (JPEG)" if "cifar10-jpeg" in cfg["dataset"] else cfg["dataset"]
    lines = [
        f"`python experiments/biohash.py --experiment {args.experiment}"
        f"{' --quick' if args.quick else ''} --seed {args.seed}"
        + "".join(
            f" --{k.replace('_', '-')} {v}"
            for k, v in (
                ("methods", args.methods),
                ("ks", args.ks),
                ("init_norm", args.init_norm),
                ("eps0", args.eps0),
                ("max_epochs", args.max_epochs),
                ("norm_target", args.norm_target),
            )
            if v is not None
        )
        + "`",
        "",
        f"{label}, raw pixels; {proto.name}; mAP@{proto.R or 'All'} (percent) by Hamming ranking, "
        "AP normalised by the relevant items retrieved in the top R (BioHash eq. 12), ties exact "
        "(expected AP over tied orders). Paper's number in brackets. Wall time "
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


if __name__ == "__main__":
    sys.exit(run_command("experiments/biohash.py", main))
