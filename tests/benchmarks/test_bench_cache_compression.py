"""``benchmarks/bench_cache_compression.py``: its smoke setting on the real annotations, end to end. Lossless
options store exactly what ``none`` stores; the 8-bit ones half the bytes, within half a code step, and with their
float16 peak windows the HRNet-decoded joints do not move, where the 8-bit codes alone move some."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_cache_compression import LOSSLESS, main
from storage.cache import COMPRESSIONS

RAW = {"COCO": 17 * 64 * 48 * 2, "MPII": 16 * 64 * 64 * 2}


def test_smoke_setting_measures_every_option(real_data, tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = main(["--smoke", "--json-out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [(s["dataset"], s["noise"]) for s in result["setups"]] == [("COCO", 0.002), ("MPII", 0.002)]
    for setup in result["setups"]:
        rows = {row["option"]: row for row in setup["rows"]}
        assert list(rows) == list(COMPRESSIONS)
        none = rows["none"]
        for row in rows.values():
            assert row["raw_float16_bytes_per_sample"] == RAW[setup["dataset"]]
            assert row["share_of_raw"] == pytest.approx(row["bytes_per_sample"] / RAW[setup["dataset"]])
            assert min(row[f"{what}_samples_per_{unit}"] for what in ("write", "read") for unit in ("s", "cpu_s")) > 0
        assert none["bytes_per_sample"] > RAW[setup["dataset"]]  # noisy float16 maps: nothing to gain
        for name in LOSSLESS:
            assert rows[name]["heatmap_max_abs_error"] == none["heatmap_max_abs_error"] <= 2.0**-12
            assert rows[name]["decoded_vs_none"]["hrnet"]["moved"] == 0
            assert rows[name]["decoded_vs_none"]["dark"]["moved"] == 0
        for name in ("u8", "lzf-u8", "gzip1-u8"):
            row = rows[name]
            assert row["bytes_per_sample"] < 0.55 * none["bytes_per_sample"]
            # Maps of range below 1 (peaks <= 0.95 plus noise): half a step of range / 255, plus float16's rounding.
            assert 2.0**-12 < row["heatmap_max_abs_error"] <= 0.5 / 255 + 2.0**-12
            assert row["decoded_vs_none"]["hrnet"]["moved"] == 0
            assert row["decoded_vs_none"]["dark"]["max_shift_px"] < 0.01
        assert rows["lzf-u8"]["bytes_per_sample"] < rows["u8"]["bytes_per_sample"]
        assert setup["u8_without_peak_window"]["decoded_vs_none"]["hrnet"]["moved"] > 0
    table = capsys.readouterr().out
    assert "8-bit codes without the peak window" in table and "load (1-min average" in table
