"""Results records and atomic writes."""

import json

import numpy as np
import pytest

from hebbret import files, results


def test_record_has_everything_a_table_needs(tmp_path):
    rec = results.record(
        config={"metric": "hamming", "k": np.int64(16)},
        seed=3,
        metrics={"map": np.float32(0.25), "curve": np.arange(3)},
        wall_time_s=1.23456,
        dataset={"spec": "digits", "checksum": "ab"},
    )
    path = tmp_path / "sub" / "r.json"
    results.write_json(path, rec)
    back = json.loads(path.read_text())
    assert back["config"] == {"metric": "hamming", "k": 16} and back["seed"] == 3
    assert back["metrics"]["curve"] == [0, 1, 2] and back["wall_time_s"] == 1.235
    assert back["git_revision"] and back["machine"]["devices"] and back["date"]
    assert back["machine"]["cpu"]  # the CPU kind: XLA compiles for it (float rounding)
    assert list(tmp_path.glob("sub/.*")) == []  # no temporary file left behind


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    files.atomic_write_text(path, "old")

    def half_then_fail(f):
        f.write(b"new, half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
