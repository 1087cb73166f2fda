"""The ``hebbret`` command line: parses flags; :mod:`hebbret.cli.commands` does the work.

    hebbret compare                        # every hasher x hash length on digits: the main job
    hebbret hash --method biohash --k 16 --features F.npy --out codes.npz
    hebbret data SPEC                      # counts per split and class, shape, checksum, cache hit
    hebbret eval --dataset digits          # raw-pixel retrieval under the dataset's protocol
    hebbret eval --queries Q.npy --database D.npy --query-labels QL.npy --database-labels DL.npy
    hebbret retrain --network CKPT --dataset SPEC --scheme fu+rri --out OUT   # re-index

User errors (bad input, unknown dataset, missing file) print one line ``hebbret: error: ...`` and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hebbret import data, hashing, retrieval
from hebbret.cli import commands, retrain
from hebbret.errors import InputError, check_seed, run_command
from hebbret.pipelines import compare


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _seed(text: str) -> int:
    try:
        return check_seed(int(text))
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 2**63), got {text!r}"
        ) from None


def _depth(text: str) -> int | str:
    if text.lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"R must be an integer or 'all', got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hebbret",
        description="Hebbian representation learning for content-based image retrieval.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "data",
        help="describe a dataset",
        description=f"Load a dataset and describe it. SPEC is one of: {data.SPECS}.",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser(
        "eval",
        help="retrieval metrics for features or codes",
        description="Rank a database for every query and report mAP@R (three normalisers), "
        "precision@N and recall@N. Either --dataset (raw pixels under the dataset's default "
        "protocol: the baseline every method must beat) or --queries/--database files "
        "(.npy, or .npz with arrays x and y).",
    )
    src = p.add_argument_group("input (one of)")
    src.add_argument("--dataset", metavar="SPEC", help=f"dataset spec: {data.SPECS}")
    src.add_argument("--queries", metavar="FILE", help="query features / packed codes")
    src.add_argument("--database", metavar="FILE", help="database features / packed codes")
    src.add_argument("--query-labels", metavar="FILE", help=".npy labels (else y in the .npz)")
    src.add_argument("--database-labels", metavar="FILE", help=".npy labels (else y in .npz)")
    p.add_argument("--metric", default="sqeuclidean", choices=retrieval.METRICS)
    p.add_argument(
        "--R",
        type=_depth,
        default=None,
        metavar="R",
        help="list depth for AP@R, an integer or 'all' (default: the protocol's R, else all)",
    )
    p.add_argument(
        "--normaliser",
        default="retrieved",
        choices=retrieval.NORMALISERS,
        help="AP normaliser reported as mAP (all three are printed)",
    )
    p.add_argument(
        "--tie",
        default="exact",
        choices=retrieval.TIES,
        help="tie handling: exact expected value (default), seeded random, stable",
    )
    p.add_argument(
        "--at",
        type=_positive_ints,
        default=None,
        metavar="N,N",
        help="ranks for precision@N / recall@N (default 10,100 clipped to R)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="protocol split and tie seed")
    p.add_argument("--devices", type=int, default=1, help="shard the database over this many")
    p.add_argument("--out", metavar="FILE.json", help="write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser(
        "compare",
        help="train every hasher and print the mAP table (the main job)",
        description="Fit each hashing method at each hash length k on the dataset's training "
        "data (= its database, as in the BioHash protocols), rank the database for every query "
        "by Hamming distance, and print mAP (methods x k) with wall times.",
    )
    p.add_argument("--dataset", default="digits", metavar="SPEC", help=f"{data.SPECS}")
    p.add_argument(
        "--k",
        type=_positive_ints,
        default=(2, 4, 8, 16, 32),
        metavar="K,K",
        help="hash lengths (default 2,4,8,16,32)",
    )
    p.add_argument(
        "--methods",
        default=",".join(compare.DEFAULT_METHODS),
        metavar="M,M",
        help=f"comma-separated subset of {', '.join(hashing.HASHERS)} (default: all but "
        "bioconvhash, whose paper settings need ~30 GB for CIFAR-10's 50k images)",
    )
    _hash_options(p)
    p.add_argument("--out", metavar="FILE.json", help="write the rows as a results record")

    p = sub.add_parser(
        "hash",
        help="hash a dataset or any (n, d) feature matrix",
        description="Fit a hasher on all rows and encode all rows, in order. Writes an .npz with "
        "bits (n, L) uint8, packed (n, ceil(L/32)) uint32, active (n, k) int32 sorted unit "
        "indices for sparse methods, and config (JSON).",
    )
    p.add_argument("--method", required=True, choices=list(hashing.HASHERS))
    p.add_argument("--k", type=int, required=True, help="hash length")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="SPEC", help="all splits pooled, raw pixels")
    src.add_argument("--features", metavar="F.npy", help="(n, d) features (.npy or .npz x)")
    _hash_options(p)
    p.add_argument("--out", required=True, metavar="codes.npz")
    retrain.add_parser(sub)
    return parser


def _hash_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--activity",
        type=float,
        default=None,
        help="BioHash activity k/m (default 0.05 for digits/mnist, else 0.005)",
    )
    p.add_argument("--max-epochs", type=int, default=None, help="cap on BioHash epochs")
    conv = p.add_argument_group("BioConvHash (defaults: the paper's per dataset, see --help)")
    conv.add_argument("--filters", type=int, help="F filters per kernel size (CIFAR 400)")
    conv.add_argument("--kernels", type=_positive_ints, help="kernel sizes (CIFAR 3,4,10)")
    conv.add_argument("--k-ci", type=int, help="channels kept by inhibition (CIFAR 1)")
    conv.add_argument("--pool", type=int, help="max-pool kernel (paper 7)")
    conv.add_argument("--pool-stride", type=int, help="max-pool stride (paper 2)")
    p.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="the fits' PRNG key is jax.random.key(seed); compare also splits its protocol with it",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hebbret`` script."""
    args = _parser().parse_args(argv)
    run = {
        "data": commands.data_summary,
        "eval": commands.evaluate,
        "compare": commands.compare,
        "hash": commands.hash_features,
        "retrain": retrain.retrain,
    }[args.command]
    return run_command("hebbret", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
