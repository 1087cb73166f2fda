"""hebbret.retrieval.evaluate vs faiss exact search: mAP@1000, nq queries x nb database items.

Cases: (a) 64-bit packed Hamming codes (hebbret "hamming" vs faiss IndexBinaryFlat),
(b) 512-d float32 Gaussian features (hebbret "sqeuclidean" vs faiss IndexFlatL2); random labels in
10 classes. Every (case, library) runs in its own child process on the same seeded data, so peak
RSS is per measurement. Times: best of --repeats after one warm-up call (the first call, which for
hebbret includes compilation, is reported separately). faiss only returns the top-R lists while
hebbret also computes AP, so the ratio is conservative for hebbret.

    python benchmarks/retrieval.py [--nq 10000 --nb 50000 --repeats 3 --out results/<name>]
"""

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import time
import zlib

import numpy as np
import psutil

R, CLASSES, SEED, DIM = 1000, 10, 0, 512
CASES = {"hamming": "64-bit Hamming codes", "float": "512-d float32, squared L2"}


def make_data(case: str, nq: int, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded data, identical in every child: (xq, xb, yq, yb)."""
    rng = np.random.default_rng(SEED)
    n = nq + nb
    if case == "hamming":
        x = rng.integers(0, 2**32, (n, 2), dtype=np.uint32)
    else:
        x = rng.standard_normal((n, DIM), dtype=np.float32)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    return x[:nq], x[nq:], y[:nq], y[nq:]


def map_from_lists(idx: np.ndarray, yq: np.ndarray, yb: np.ndarray) -> float:
    """mAP@R ("retrieved" normaliser) of ranked index lists; used only to sanity-check faiss."""
    rel = (yb[idx] == yq[:, None]).astype(np.float64)
    prec = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    hits = rel.sum(1)
    return float(np.mean(np.where(hits > 0, (prec * rel).sum(1) / np.maximum(hits, 1), 0.0)))


def child(case: str, lib: str, nq: int, nb: int, repeats: int) -> dict:
    """Runs one (case, library) measurement in this process and returns its numbers."""
    load = os.getloadavg()[0]  # other work on the machine skews the times
    xq, xb, yq, yb = make_data(case, nq, nb)
    checksum = zlib.crc32(xq.tobytes() + xb.tobytes() + yq.tobytes() + yb.tobytes())
    rss0 = psutil.Process().memory_info().rss / 2**20  # before importing either library
    src = None  # hash of the hebbret kernel source this child imported
    if lib == "hebbret":
        import hebbret.retrieval
        from hebbret.retrieval import evaluate

        package = pathlib.Path(hebbret.retrieval.__file__).parent  # every module of the kernel
        digest = hashlib.sha256()
        for module in sorted(package.glob("*.py")):
            digest.update(module.name.encode() + module.read_bytes())
        src = digest.hexdigest()[:12]
        metric = "hamming" if case == "hamming" else "sqeuclidean"

        def run() -> float:
            return evaluate(xq, xb, yq, yb, metric=metric, R=R)["map"]
    else:
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)
        if case == "hamming":
            xq, xb = xq.view(np.uint8), xb.view(np.uint8)
        index = faiss.IndexBinaryFlat(64) if case == "hamming" else faiss.IndexFlatL2(DIM)
        index.add(xb)  # outside the timing: faiss is timed on search alone

        def run() -> np.ndarray:
            return index.search(xq, R)[1]

    t = time.perf_counter()
    out = run()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    quality = out if lib == "hebbret" else map_from_lists(out, yq, yb)
    return {
        **{"case": case, "lib": lib, "first_s": first, "best_s": min(times), "times_s": times},
        **{"peak_rss_mb": peak, "rss_after_data_mb": rss0, "peak_minus_data_mb": peak - rss0},
        **{"map": quality, "data_crc32": checksum, "loadavg_1min_at_start": load},
        "hebbret_retrieval_sha256": src,
    }


def machine() -> dict:
    import faiss
    import jax

    with open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        **{"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram, 1)},
        **{"jax_devices": [str(d) for d in jax.devices()], "jax": jax.__version__},
        **{"faiss": faiss.__version__, "numpy": np.__version__},
        **{"python": platform.python_version(), "gpu": jax.default_backend() != "cpu"},
        **{"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "platform": platform.platform()},
    }


def table(rows: dict, m: dict, command: str, date: str, args: argparse.Namespace) -> str:
    loads = ", ".join(f"{r['loadavg_1min_at_start']:.2f}" for r in rows.values())
    lines = [
        f"`{command}`",
        "",
        f"Machine: {m['cores']}-core CPU ({m['cpu']}), {m['ram_gb']} GB RAM, "
        f"{'a GPU' if m['gpu'] else 'no GPU'} (JAX devices: {', '.join(m['jax_devices'])}). "
        f"{date}. jax {m['jax']}, faiss {m['faiss']}, numpy {m['numpy']}, Python {m['python']}; "
        f"XLA_FLAGS={m['XLA_FLAGS'] or 'unset'}; faiss threads = {m['cores']}. 1-min load average "
        f"as each measurement started (it lags: includes the previous measurement): {loads}.",
        "",
        f"mAP@{R}, {args.nq:,} queries x {args.nb:,} database items, random labels in {CLASSES} "
        f"classes. Time: best of {args.repeats} after one warm-up call; first call (incl. JAX "
        "compilation) separately. Memory: peak RSS of the measurement's own process, and that "
        "peak minus the RSS right after generating the data (before importing either library or "
        f"building faiss's index). Ratio = hebbret time / faiss time: faiss only finds the top-{R} "
        "lists, hebbret also computes AP (conservative for hebbret). faiss mAP is computed from "
        f"its lists outside the timing, as a cross-check. hebbret: {m['hebbret']}.",
        "",
        "| case | library | best time (s) | first call (s) | peak RSS (MB) "
        "| peak - data RSS (MB) | mAP@1000 | hebbret / faiss |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, desc in CASES.items():
        h, f = rows[(case, "hebbret")], rows[(case, "faiss")]
        for r in (h, f):
            ratio = f"**{h['best_s'] / f['best_s']:.2f}x**" if r is h else ""
            lines.append(
                f"| {desc} | {r['lib']} | {r['best_s']:.3f} | {r['first_s']:.3f} "
                f"| {r['peak_rss_mb']:.0f} | {r['peak_minus_data_mb']:.0f} | {r['map']:.4f} "
                f"| {ratio} |"
            )
    lines += ["", "Targets: hebbret within 2x of faiss in both cases; peak memory < 4 GB."]
    return "\n".join(lines) + "\n"


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nq", type=int, default=10_000)
    p.add_argument("--nb", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="results/retrieval_benchmark")
    p.add_argument("--child", nargs=2, metavar=("CASE", "LIB"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.nq, args.nb, args.repeats)))
        return
    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    command = shlex.join([exe, *sys.argv])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    sizes = ["--nq", str(args.nq), "--nb", str(args.nb), "--repeats", str(args.repeats)]
    rows = {}
    for case in CASES:
        for lib in ("hebbret", "faiss"):
            cmd = [sys.executable, __file__, *sizes, "--child", case, lib]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[(case, lib)] = json.loads(out.strip().splitlines()[-1])
            print(f"{case:8s} {lib:8s} {rows[(case, lib)]}", file=sys.stderr, flush=True)
        assert rows[(case, "hebbret")]["data_crc32"] == rows[(case, "faiss")]["data_crc32"]
    m = machine()
    git = ["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"]
    srcs = sorted({r["hebbret_retrieval_sha256"] for r in rows.values()} - {None})
    head = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    m["hebbret"] = f"git {head}, hebbret/retrieval.py sha256 {' / '.join(srcs)}" + (
        " (CHANGED DURING THE RUN)" if len(srcs) > 1 else ""
    )
    md = table(rows, m, command, date, args)
    print(md)
    ratios = {c: rows[(c, "hebbret")]["best_s"] / rows[(c, "faiss")]["best_s"] for c in CASES}
    record = {"command": command, "date": date, "machine": m, "args": vars(args), "R": R}
    record |= {"results": list(rows.values()), "ratio_hebbret_over_faiss": ratios}
    write_atomic(args.out + ".md", md)
    write_atomic(args.out + ".json", json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
