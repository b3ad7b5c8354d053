"""benchmarks/attention.py: its rows, ratios and options on a tiny CPU setting."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def benchmark(load_benchmark):
    return load_benchmark("attention")


def test_explicit_rows_take_the_query_chunk_size(benchmark) -> None:
    layer, need_weights, official = benchmark.build_attention("comp_explicit_R2", 16, 2, None, query_chunk_size=4)
    assert (layer.search_backend, layer.query_chunk_size, layer.num_retrievals) == ("explicit", 4, 2)
    assert not need_weights and not official
    automatic, _, _ = benchmark.build_attention("comp_R8", 16, 2, None)
    assert (automatic.search_backend, automatic.query_chunk_size) == ("auto", None)


def test_table_rows_and_ratios_to_the_sdpa_path(benchmark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "attention.csv"
    argv = [
        "attention.py", "--lengths", "8", "--batch-sizes", "2", "--embed-dim", "16", "--heads", "2",
        "--retrievals", "2", "--comp-backends", "auto", "explicit", "--query-chunk-size", "4",
        "--repeats", "1", "--in-process", "--out", str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    benchmark.main()
    with out.open(newline="") as handle:
        rows = {row["row"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["mha", "mha_sdpa", "comp_R2", "comp_explicit_R2"]
    baseline = rows["mha_sdpa"]
    assert float(baseline["time_vs_sdpa"]) == 1.0 and float(baseline["memory_vs_sdpa"]) == 1.0
    assert {row["query_chunk_size"] for row in rows.values()} == {"4"}
    for name in ("comp_R2", "comp_explicit_R2"):
        row = rows[name]
        assert float(row["time_vs_sdpa"]) == pytest.approx(float(row["ms"]) / float(baseline["ms"]))
        assert float(row["memory_vs_sdpa"]) == pytest.approx(float(row["peak_mib"]) / float(baseline["peak_mib"]))
        assert float(row["flop_ratio"]) == 1.5  # (1 + R) / 2


def test_bad_sizes_and_runs_without_any_row_leave_the_csv_alone(
    benchmark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "attention.csv"
    out.write_text("earlier results\n")
    common = ["attention.py", "--lengths", "8", "--repeats", "1", "--in-process", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*common, "--embed-dim", "30", "--heads", "4"])
    with pytest.raises(SystemExit):
        benchmark.main()
    assert "--embed-dim 30 is not divisible by --heads 4" in capsys.readouterr().err
    # a folder without the official model.py (was: ModuleNotFoundError in a worker, row dropped)
    monkeypatch.setattr(sys, "argv", [*common, "--official-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        benchmark.main()
    assert f"--official-dir {tmp_path} has no model.py" in capsys.readouterr().err
    # every row fails (here: out of the measured function's hands) -> a message, the CSV untouched
    monkeypatch.setattr(sys, "argv", [*common, "--embed-dim", "16", "--heads", "2", "--retrievals", "2"])
    monkeypatch.setattr(benchmark, "run_in_process", lambda spec: None)
    with pytest.raises(SystemExit, match="no row was measured"):
        benchmark.main()
    assert out.read_text() == "earlier results\n"
