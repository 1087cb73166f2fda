"""Every notebook in colab/ runs top to bottom on the embedded digits data, draws its figures, and
prints the numbers a numpy computation here gives."""

import pathlib
import re

import jax
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from test_retrieval import np_bits_distance, np_distances, np_exact_retrieved

from hebbret import data
from hebbret.data import splits

COLAB = pathlib.Path(__file__).parent.parent / "colab"
NOTEBOOKS = (
    "autoencoder_quickstart.ipynb",
    "biohash_quickstart.ipynb",
    "hpca_quickstart.ipynb",
    "kuo_quickstart.ipynb",
    "retraining_quickstart.ipynb",
    "retrieval_quickstart.ipynb",
)


def test_the_notebooks_are_the_documented_ones():
    assert sorted(p.name for p in COLAB.glob("*.ipynb")) == list(NOTEBOOKS)


def _run(name: str, tmp_path, monkeypatch) -> str:
    """Executes the notebook; returns everything it printed (figures checked to exist)."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    nb = nbformat.read(COLAB / name, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    assert any(o.get("output_type") == "display_data" for o in outputs)  # the figures
    stdout = [o for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout"]
    return "".join(o.get("text", "") for o in stdout)


def _digits_map(codes_or_x, metric: str, seed: int = 0) -> float:
    """mAP@All (percent) of the digits default protocol, distances and AP in plain numpy."""
    p = splits.default_protocol(data.load("digits", progress=False), seed=seed)
    if metric == "hamming":
        q, b = codes_or_x(p.xq), codes_or_x(p.xb)
        d = np_bits_distance(q, b, "hamming")
    else:
        d = np_distances(p.xq.astype(np.float64), p.xb.astype(np.float64), metric)
    n = len(p.yb)
    return 100 * np.mean([np_exact_retrieved(d[i], p.yb == p.yq[i], n) for i in range(len(p.yq))])


def test_retrieval_quickstart(tmp_path, monkeypatch):
    printed = _run("retrieval_quickstart.ipynb", tmp_path, monkeypatch)
    value = float(re.search(r"^sqeuclidean\s+([\d.]+)", printed, re.M).group(1))
    assert value == pytest.approx(_digits_map(None, "sqeuclidean"), abs=0.006)


def test_biohash_quickstart(tmp_path, monkeypatch):
    printed = _run("biohash_quickstart.ipynb", tmp_path, monkeypatch)
    lsh_k2 = float(re.search(r"^\| LSH \| ([\d.]+)", printed, re.M).group(1))
    p = splits.default_protocol(data.load("digits", progress=False), seed=0)
    mean = p.xb.astype(np.float32).mean(0, dtype=np.float64)
    proj = np.asarray(jax.random.normal(jax.random.key(0), (2, p.xb.shape[1])), np.float64)

    def codes(x):
        return (x.astype(np.float64) - mean) @ proj.T > 0

    assert lsh_k2 == pytest.approx(_digits_map(codes, "hamming"), abs=0.006)


def test_hpca_quickstart(tmp_path, monkeypatch):
    """The layer the notebook reports as chosen is the printed row with the best validation
    mAP (ties: the shallower layer), and its test mAP is that row's."""
    printed = _run("hpca_quickstart.ipynb", tmp_path, monkeypatch)
    row = r"(none|hpca)\s+layer (\d): mAP ([\d.]+), .* validation mAP ([\d.]+)"
    found = re.findall(row, printed, re.M)
    rows = [(n, int(layer), float(m), float(v)) for n, layer, m, v in found]
    chosen = r"^(none|hpca): layer (\d) chosen on validation, test mAP ([\d.]+)"
    reported = re.findall(chosen, printed, re.M)
    assert len(rows) == 4 and len(reported) == 2
    for name, layer, test_map in reported:
        mine = [r for r in rows if r[0] == name]
        best = max(sorted(mine, key=lambda r: r[1]), key=lambda r: r[3])
        assert (int(layer), float(test_map)) == (best[1], best[2])


def test_retraining_quickstart(tmp_path, monkeypatch):
    """FU retraining lowers its loss, and the before / after lines carry mAP, mAP@50 and QE."""
    printed = _run("retraining_quickstart.ipynb", tmp_path, monkeypatch)
    first, last = map(float, re.search(r"^loss ([\d.e+-]+) -> ([\d.e+-]+)", printed, re.M).groups())
    assert last < first
    num = r"([\d.]+)"
    row = rf"^(before|after FU)\s+mAP {num}\s+mAP@50 {num}\s+QE mAP {num}\s+QE mAP@50 {num}"
    found = re.findall(row, printed, re.M)
    assert [f[0] for f in found] == ["before", "after FU"]
    assert all(0 < float(v) <= 100 for f in found for v in f[1:])


def test_kuo_quickstart(tmp_path, monkeypatch):
    """The SAE's loss falls and its mean activation nears rho; both CNNs learn the digits; every
    (network, distance) line carries mAP and P@10."""
    printed = _run("kuo_quickstart.ipynb", tmp_path, monkeypatch)
    num = r"([\d.]+)"
    first, last, rho = map(float, re.search(rf"^SAE loss {num} -> {num}; mean activation {num}",
                                            printed, re.M).groups())  # fmt: skip
    assert last < first and abs(rho - 0.05) < 0.05
    acc = dict(re.findall(rf"^(plain|pre-train \+ DA)\s+test accuracy top-1 {num}", printed, re.M))
    assert list(acc) == ["plain", "pre-train + DA"] and all(float(v) > 50 for v in acc.values())
    rows = re.findall(rf"^(plain|pre-train \+ DA)\s+(\w+)\s+mAP {num}  P@10 {num}", printed, re.M)
    assert [(r[0], r[1]) for r in rows] == [
        (n, d) for n in acc for d in ("euclidean", "manhattan", "cosine")
    ]
    assert all(0 < float(r[2]) <= 100 and 0 < float(r[3]) <= 100 for r in rows)


def test_autoencoder_quickstart(tmp_path, monkeypatch):
    """Both auto-encoders' losses fall; the supervised one's clusters match the classes better
    (NMI, RI) and it retrieves better, as the report finds."""
    printed = _run("autoencoder_quickstart.ipynb", tmp_path, monkeypatch)
    num = r"([\d.]+)"
    for first, last in re.findall(rf"^\w+\s+loss {num} -> {num}", printed, re.M):
        assert float(last) < float(first)
    pattern = rf"^(\w+)\s+NMI {num}  RI {num}  mAP {num}  cluster-then-rank mAP {num}"
    rows = {r[0]: [float(v) for v in r[1:]] for r in re.findall(pattern, printed, re.M)}
    assert list(rows) == ["vanilla", "supervised"]
    assert all(0 <= v[0] <= 1 and 0 <= v[1] <= 1 and 0 < v[2] <= 100 for v in rows.values())
    assert rows["supervised"][0] > rows["vanilla"][0] and rows["supervised"][2] > rows["vanilla"][2]
