"""Retraining schemes as chains of stages on one cut network (Tzelepi & Tefas 2018, §3.2).

A scheme is a chain of stages, ``"fu+rri+rf"``: each stage builds its targets from the current
representations (the starting network's for the first stage), then regresses the block onto them
starting from the current parameters (the first stage: the starting network's, with a fresh
PReLU). :class:`Runner` trains each distinct chain prefix once, checkpointed under its folder, and
scores a scheme's final representations on the protocol's query sets.
"""

from __future__ import annotations

import hashlib
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from hebbret import checkpoints, plots, retrieval
from hebbret.errors import InputError
from hebbret.retraining import network, regress, targets
from hebbret.retrieval import expansion

RULES = ("fu", "rri", "rf")
# the paper's settings (§5.3) for every rule and the optimisation
PAPER = {
    "fu": {"n": 2, "eta": 0.5},
    "rri": {"n": 5, "beta": 0.2, "theta": 0.5},
    "rf": {"users": 1_000, "relevant": 12, "irrelevant": 1, "alpha": 0.5, "depth": 1_000},
    "retrain": {"epochs": 50, "batch": 64, "lr": 1e-5},
    "qe_top": 10,
    "qe_ablation": (),
    "svqe": (),
    "svqe_shortlist": 100,
    "iterative_rf": {"rounds": 0, "relevant": 3, "irrelevant": 3, "epochs": 2},
}


def parse(scheme: str) -> tuple[str, ...]:
    """``"fu+rri"`` -> ("fu", "rri"); InputError for an unknown or repeated stage."""
    parts = tuple(scheme.split("+"))
    if not scheme or any(p not in RULES for p in parts) or len(set(parts)) != len(parts):
        raise InputError(f"unknown scheme {scheme!r}: stages joined by '+', each one of {RULES}")
    return parts


def parse_cut(text: str) -> network.Cut:
    """``"conv4+fc5:fc5"`` (retrained layers joined by '+', then ':' and the target layer)."""
    layers, sep, target = text.partition(":")
    if not sep:
        raise InputError(f"a cut is 'LAYER[+LAYER...]:TARGET', e.g. 'conv4+fc5:fc5'; got {text!r}")
    return network.cut(layers.split("+"), target)


class Protocol(NamedTuple):
    """Database images / labels, query sets (lists of images / labels) and RF users."""

    xb: np.ndarray
    yb: np.ndarray
    xq: list[np.ndarray]
    yq: list[np.ndarray]


class Runner:
    """Trains and scores the schemes of one (starting network, cut).

    Args:
      cfg: the study's settings (``fu``, ``rri``, ``rf``, ``retrain``, ``qe_top``, ``svqe``...).
      protocol: database and query sets.
      variables, mean, std: the starting network and its input statistics.
      c: the cut; keep_variance: the network's bn3-bn5 keep relative variance (HPCA).
      folder: checkpoints of the stages (one sub-folder per chain prefix).
    """

    def __init__(self, cfg, protocol, variables, mean, std, c, *, keep_variance, folder, log):
        self.cfg, self.p, self.c, self.log = cfg, protocol, c, log
        self.folder = pathlib.Path(folder)
        self.variables, self.mean, self.std, self.kv = variables, mean, std, keep_variance
        t = time.perf_counter()
        self.inputs = network.prefix_inputs(
            variables, c, protocol.xb, mean, std, keep_variance=keep_variance
        )
        self.q_inputs = [
            network.prefix_inputs(variables, c, x, mean, std, keep_variance=keep_variance)
            for x in protocol.xq
        ]
        base, frozen = network.split_params(variables, c, slope=None)
        self.fresh, _ = network.split_params(variables, c)
        self.apply = network.block_apply(c, frozen, keep_variance=keep_variance)
        self.trained: dict[tuple[str, ...], dict] = {(): base}
        self.info: dict[tuple[str, ...], dict] = {(): {"prefix_s": time.perf_counter() - t}}
        self._features: dict[tuple[str, ...], tuple[np.ndarray, list[np.ndarray]]] = {}

    def features(self, params: dict) -> tuple[np.ndarray, list[np.ndarray]]:
        """Database (N, D) and per-set query features of the block with ``params``."""
        xb = network.features(self.apply, params, self.inputs)
        return xb, [network.features(self.apply, params, q) for q in self.q_inputs]

    def chain_features(self, chain: tuple[str, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
        """:meth:`features` after the stages ``chain``, computed once per chain (the next stage's
        targets, the row's scores and the grid all read them)."""
        if chain not in self._features:
            self._features[chain] = self.features(self.stage(chain))
        return self._features[chain]

    def stage(self, chain: tuple[str, ...]) -> dict:
        """Parameters after the stages ``chain`` (trained once, then remembered)."""
        if chain in self.trained:
            return self.trained[chain]
        parent = self.stage(chain[:-1])
        xb, xq = self.chain_features(chain[:-1])
        t = time.perf_counter()
        pairs = self._targets(chain[-1], xb, xq[0])
        targets_s = time.perf_counter() - t
        name = "+".join(chain)
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        restored = checkpoints.latest_step(self.folder / name) or 0
        t = time.perf_counter()
        result = regress.retrain(
            self.apply, parent if chain[:-1] else self.fresh, self.inputs, pairs,
            regress.RetrainConfig(**self.cfg["retrain"]),
            key=jax.random.fold_in(jax.random.key(self.cfg["seed"]), seed),
            checkpoint_dir=self.folder / name, desc=name,
        )  # fmt: skip
        self.trained[chain] = result.params
        self.info[chain] = {
            "targets_s": targets_s, "train_s": time.perf_counter() - t, "pairs": len(pairs.index),
            "epochs_restored": restored,
            "loss_first": result.losses[0] if result.losses else None,
            "loss_last": result.losses[-1] if result.losses else None,
        }  # fmt: skip
        self.log(f"{name} {self.c.label()}: {len(pairs.index)} pairs, targets {targets_s:.1f} s")
        return result.params

    def _targets(self, rule: str, xb: np.ndarray, xq: np.ndarray) -> targets.TrainingSet:
        cfg = self.cfg[rule]
        if rule == "fu":
            return targets.fu_targets(xb, n=cfg["n"], eta=cfg["eta"])
        if rule == "rri":
            return targets.rri_targets(
                xb, self.p.yb, n=cfg["n"], beta=cfg["beta"], theta=cfg["theta"]
            )
        # rf: the users are the first query set's queries, judging their own results (§5.3.3)
        users = min(cfg["users"], len(xq))
        rel, irr = targets.simulate_feedback(
            xq[:users], self.p.yq[0][:users], xb, self.p.yb,
            relevant=cfg["relevant"], irrelevant=cfg["irrelevant"], depth=cfg["depth"],
        )  # fmt: skip
        return targets.rf_targets(xq[:users], xb, rel, irr, alpha=cfg["alpha"])

    def row(self, scheme: str) -> dict[str, Any]:
        """mAP (eq. 18, whole database) and mAP@50 of the scheme's features on every query set,
        plain, with query expansion and (schemes in ``cfg["svqe"]``) spatial verification + QE."""
        chain = () if scheme == "baseline" else parse(scheme)
        params = self.stage(chain)
        t = time.perf_counter()
        xb, xqs = self.chain_features(chain)
        scores: dict[str, list[float]] = {}
        for s, xq in enumerate(xqs):
            variants = {"": xq, "qe_": expansion.query_expansion(xq, xb, top=self.cfg["qe_top"])}
            for top in self.cfg["qe_ablation"]:  # QE with other list lengths
                variants[f"qe{top}_"] = expansion.query_expansion(xq, xb, top=top)
            if scheme in self.cfg["svqe"]:
                variants["svqe_"] = expansion.spatial_verification_qe(
                    xq, xb, self.p.xb, self.embed(params),
                    shortlist=self.cfg["svqe_shortlist"], top=self.cfg["qe_top"],
                )  # fmt: skip
            for prefix, q in variants.items():
                for k, v in score(q, xb, self.p.yq[s], self.p.yb).items():
                    scores.setdefault(prefix + k, []).append(v)
        row: dict[str, Any] = {"representation": self.c.label(), "dim": int(xb.shape[1])}
        for k, v in scores.items():
            row[k] = float(np.mean(v))
            if len(v) > 1:
                row[f"{k}_std"] = float(np.std(v))
        info = self.info[chain]
        return row | info | {"eval_s": time.perf_counter() - t}

    def iterative_feedback(self, rounds: int, relevant: int, irrelevant: int, epochs: int) -> dict:
        """Iterative RF (§5.5): in each round every user (the first query set's queries) marks
        the first ``relevant`` relevant and ``irrelevant`` irrelevant items it has not judged yet
        among its current results, and the block, starting from the previous round's parameters
        (round 1: the starting network with a fresh PReLU), is retrained on that round's pairs
        for ``epochs`` epochs. Returns the users' precision@3 before round 1 and after each
        round, and mAP / mAP@50 after the last. Unlike the paper (one retraining per query), all
        users share one retraining per round."""
        cfg, rt = self.cfg["rf"], self.cfg["retrain"]
        users = min(cfg["users"], len(self.p.yq[0]))
        yu = self.p.yq[0][:users]
        params, judged, p3 = self.stage(()), np.full((users, 0), -1, np.int64), []
        for r in range(rounds + 1):
            xb, xq = self.features(params)
            m = retrieval.evaluate(xq[0][:users], xb, yu, self.p.yb, metric="euclidean", at=(3,))
            p3.append(100 * m["precision_at"][3])
            if r == rounds:
                break
            rel, irr = targets.simulate_feedback(
                xq[0][:users], yu, xb, self.p.yb, relevant=relevant, irrelevant=irrelevant,
                depth=cfg["depth"], skip=judged,
            )  # fmt: skip
            judged = np.concatenate([judged, rel, irr], axis=1)
            pairs = targets.rf_targets(xq[0][:users], xb, rel, irr, alpha=cfg["alpha"])
            params = regress.retrain(
                self.apply, params if r else self.fresh, self.inputs, pairs,
                regress.RetrainConfig(epochs, rt["batch"], rt["lr"]),
                key=jax.random.fold_in(jax.random.key(self.cfg["seed"]), 1000 + r),
                checkpoint_dir=self.folder / f"rf_round{r + 1}", desc=f"rf round {r + 1}",
            ).params  # fmt: skip
        return {"precision_at_3": p3} | score(xq[0], xb, self.p.yq[0], self.p.yb)

    def embed(self, params: dict) -> Callable[[np.ndarray], np.ndarray]:
        """images (n, 32, 32, 3) uint8 -> target-layer features, through the whole network."""

        def fn(images: np.ndarray) -> np.ndarray:
            inputs = network.prefix_inputs(
                self.variables, self.c, images, self.mean, self.std, keep_variance=self.kv
            )
            return network.features(self.apply, params, inputs)

        return fn

    def grid(self, out: str, scheme: str, n: int = 6, k: int = 8) -> None:
        """Retrieval grids of ``n`` queries of different classes before (``OUT_grid_before.png``)
        and after ``scheme`` (``OUT_grid_after.png``), top ``k`` each."""
        import matplotlib.pyplot as plt

        from hebbret import files

        yq = self.p.yq[0]
        pick = np.sort(np.unique(yq, return_index=True)[1])[:n]  # one query per class
        for suffix, name, chain in (("before", "baseline", ()), ("after", scheme, parse(scheme))):
            xb, xqs = self.chain_features(chain)
            _, idx = retrieval.search(xqs[0][pick], xb, k, metric="euclidean")
            fig = plots.retrieval_grid(
                self.p.xq[0][pick], self.p.xb, idx, yq[pick], self.p.yb,
                title=f"{name} {self.c.label()}",
            )  # fmt: skip
            png = f"{out}_grid_{suffix}.png"
            files.atomic_write(png, lambda f, fig=fig: fig.savefig(f, format="png", dpi=90))
            plt.close(fig)


def score(xq: np.ndarray, xb: np.ndarray, yq: np.ndarray, yb: np.ndarray) -> dict[str, float]:
    """``map``: mAP over the whole database normalised by all relevant items (Tzelepi eq. 18);
    ``map50``: mAP@50 normalised by the relevant items retrieved (the paper's top-50 numbers lie
    on that scale; the whole database if it is smaller); ``p10``: precision of the top 10 (what
    QE averages); Euclidean distance."""
    at = min(50, len(xb))
    m = retrieval.evaluate(
        xq, xb, yq, yb, metric="euclidean", R="all", normaliser="relevant", more_R=(at,),
        at=(min(10, len(xb)),),
    )  # fmt: skip
    p10 = 100 * next(iter(m["precision_at"].values()))
    return {"map": 100 * m["map"], "map50": 100 * m["map_at"][at]["retrieved"], "p10": p10}
