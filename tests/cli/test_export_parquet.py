"""``oppsig export --out X.parquet``: the same table as the CSV, read back with pyarrow; a clear error without it."""

import csv
import sys

import numpy as np
import pyarrow.parquet as pq

from oppsig.cli.main import main

from .test_commands import one_line_error


def test_parquet_holds_the_csv_table(run_copy, tmp_path, capsys):
    assert main(["export", str(run_copy), "--out", str(tmp_path / "t.parquet")]) == 0
    assert main(["export", str(run_copy), "--out", str(tmp_path / "t.csv")]) == 0
    table = pq.read_table(tmp_path / "t.parquet").to_pydict()
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(table) == list(rows[0])  # same columns, same order
    assert len(table["id"]) == len(rows) == 128
    assert table["id"] == [int(r["id"]) for r in rows]
    assert table["class"] == [r["class"] for r in rows] and table["class"][0].startswith("class")
    assert table["group"] == [None] * 128 and {r["group"] for r in rows} == {""}  # no signals.json yet
    for col in table:
        if col in ("id", "class", "group"):
            continue
        csv_values = np.array([float(r[col]) for r in rows])
        # the CSV keeps 6 significant digits, the Parquet file the float itself
        assert np.allclose(np.asarray(table[col], dtype=float), csv_values, rtol=1e-5, atol=0, equal_nan=True), col


def test_parquet_without_pyarrow_is_a_one_line_error(run_copy, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    msg = one_line_error(capsys, main(["export", str(run_copy), "--out", str(tmp_path / "t.parquet")]))
    assert "pyarrow" in msg and ".csv" in msg
    assert not (tmp_path / "t.parquet").exists()
