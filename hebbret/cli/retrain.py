"""``hebbret retrain``: retrain a layer of a saved network on a dataset and re-index it.

    hebbret retrain --network CKPT --dataset SPEC --scheme fu+rri --layers conv4,fc5 --target fc5 \
        --out OUT

Reads a network written by :func:`hebbret.retraining.network.save_network` (e.g. a retraining
study's ``checkpoints/<OUT>/<start>/network``), retrains it with the scheme's stages (the paper's
settings unless flags say otherwise) on the dataset's training images (the database), prints mAP
(eq. 18) and mAP@50 before and after for random test queries, and writes ``OUT.npz`` (``x``: the
database's retrained features, ``y``: labels; ``hebbret eval --database OUT.npz`` reads it) and
``OUT.network`` (the retrained network, which ``--network`` takes again).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from hebbret import data, files
from hebbret.data import splits
from hebbret.errors import InputError, check_seed
from hebbret.retraining import network, stages


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``retrain`` subcommand's flags."""
    p = sub.add_parser(
        "retrain",
        help="retrain a saved network's layers for retrieval (FU / RRI / RF) and re-index",
        description="Retrain the layers of a saved network (hebbret.retraining.network."
        "save_network) with FU / RRI / RF stages on a dataset's training images, print mAP "
        "before and after, and write OUT.npz (x: retrained database features, y: labels) and "
        "OUT.network (the retrained network).",
    )
    p.add_argument("--network", required=True, metavar="CKPT", help="a saved network (orbax)")
    p.add_argument("--dataset", required=True, metavar="SPEC", help=f"{data.SPECS}")
    p.add_argument("--scheme", default="fu", help="stages joined by '+', of fu, rri, rf")
    p.add_argument("--layers", default="conv4,fc5", help="retrained layers (default conv4,fc5)")
    p.add_argument("--target", default="fc5", help="target layer LT (default fc5)")
    p.add_argument(
        "--database-size", type=int, default=None, help="first N of the shuffled train split"
    )
    p.add_argument("--queries", type=int, default=1000, help="random test queries (default 1000)")
    p.add_argument("--epochs", type=int, default=50, help="epochs per stage (paper 50)")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (paper 1e-5)")
    p.add_argument("--batch", type=int, default=64, help="batch size (paper 64)")
    p.add_argument("--seed", type=int, default=0, help="database / query / shuffling seed")
    p.add_argument("--checkpoints", metavar="DIR", help="per-epoch checkpoints (resumable)")
    p.add_argument("--out", required=True, metavar="OUT", help="writes OUT.npz and OUT.network")


def retrain(args: argparse.Namespace) -> int:
    """Runs the subcommand; prints one line per scheme (before / after)."""
    check_seed(args.seed)
    chain = stages.parse(args.scheme)
    c = network.cut([s.strip() for s in args.layers.split(",") if s.strip()], args.target)
    files.check_writable(f"{args.out}.npz")
    files.check_writable(f"{args.out}.network")
    ds = data.load(args.dataset)
    if "train" not in ds.splits or "test" not in ds.splits:
        raise InputError(f"{ds.spec} needs train and test splits, has {sorted(ds.splits)}")
    train, test = ds.splits["train"], ds.splits["test"]
    if train.y is None or test.y is None:
        raise InputError(f"{ds.spec}: missing labels")
    variables, mean, std, keep_variance = network.load_network(args.network, ds.num_classes)
    n = args.database_size or len(train.x)
    if not 1 <= n <= len(train.x):
        raise InputError(f"--database-size must be in [1, {len(train.x)}], got {n}")
    db = np.sort(np.random.default_rng(args.seed).permutation(len(train.x))[:n])
    q = np.sort(splits.random_queries(len(test.x), args.queries, args.seed))
    protocol = stages.Protocol(train.x[db], train.y[db], [test.x[q]], [test.y[q]])
    cfg = stages.PAPER | {"seed": args.seed}
    cfg["retrain"] = {"epochs": args.epochs, "batch": args.batch, "lr": args.lr}
    cfg["rf"] = cfg["rf"] | {"users": min(cfg["rf"]["users"], args.queries)}
    folder = pathlib.Path(args.checkpoints or f"{args.out}.checkpoints")
    runner = stages.Runner(
        cfg, protocol, variables, mean, std, c, keep_variance=keep_variance, folder=folder,
        log=print,
    )  # fmt: skip
    before, after = runner.row("baseline"), runner.row(args.scheme)
    for name, row in (("before", before), (f"after {args.scheme}", after)):
        print(f"{name} {c.label()}: mAP {row['map']:.2f}, mAP@50 {row['map50']:.2f}")
    params = runner.stage(chain)
    xb, _ = runner.features(params)
    files.atomic_write(f"{args.out}.npz", lambda f: np.savez(f, x=xb, y=train.y[db]))
    merged = network.merge(variables, params)
    network.save_network(f"{args.out}.network", merged, mean, std, keep_variance)
    print(f"wrote {args.out}.npz ({xb.shape[0]} x {xb.shape[1]}) and {args.out}.network")
    return 0
