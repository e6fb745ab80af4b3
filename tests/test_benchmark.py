import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from recutils.benchmark import (
    cached_choice,
    compare,
    cpu_family,
    loglog_slope,
    machine_description,
    machine_key,
    matched_spectrum_vectors,
    read_family_results,
    read_results,
    results_path,
    run_in_subprocess,
    speed_ratio,
)


def test_compare_alternates_the_order_and_summarises_every_run():
    calls = []
    table = compare({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    # Warm-up a b, then a b / b a / a b: no candidate always runs first.
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert list(table.index) == ["a", "b"]
    for _, row in table.iterrows():
        assert len(row["runs"]) == 3
        assert row["min_s"] <= row["median_s"] <= row["max_s"]


def test_speed_ratio_is_reference_time_over_candidate_time():
    table = compare({"fast": lambda: None, "slow": lambda: sum(range(200_000))}, repeats=3)
    assert speed_ratio(table, "fast", "slow") > 1
    assert speed_ratio(table, "fast", "slow") == pytest.approx(1 / speed_ratio(table, "slow", "fast"))
    with pytest.raises(KeyError, match="'other' is not among"):
        speed_ratio(table, "other", "slow")


def test_loglog_slope_recovers_a_power_law():
    x = np.array([10, 100, 1000, 10_000])
    slope, intercept = loglog_slope(x, 3 * x**2.0)
    assert slope == pytest.approx(2.0) and np.exp(intercept) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="positive"):
        loglog_slope([1, 2], [0, 1])
    with pytest.raises(ValueError, match="at least 2 points"):
        loglog_slope([1], [1])


def _allocate(megabytes: int) -> int:
    block = np.ones(megabytes * 2**20, dtype=np.uint8)
    return int(block.sum())


def test_run_in_subprocess_sees_the_child_peak_memory():
    big_result, big_peak, big_before = run_in_subprocess(_allocate, megabytes=300)
    small_result, small_peak, small_before = run_in_subprocess(_allocate, megabytes=1)
    assert (small_result, big_result) == (2**20, 300 * 2**20)
    # Each measurement is its own process: the big one's 300 MB is not in the next one's peak.
    assert small_peak < big_peak - 100 * 2**20
    # The peak is about what was resident before the call plus the block (the block may
    # reuse a few pages freed earlier).
    assert big_peak - big_before > 290 * 2**20
    assert small_peak >= small_before


def test_machine_description_names_the_hardware():
    """Each field against an independent reading of the same fact."""
    machine = machine_description()
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    assert machine["cpu"] == (names[0] if names else platform.processor() or platform.machine())
    assert machine["cores"] == os.cpu_count()
    lines = cpuinfo.splitlines()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    if flags:
        listed = machine["vector_instructions"].split()
        assert listed and all(flag in flags for flag in listed) and ("avx2" in flags) == ("avx2" in listed)
    assert machine["torch_threads"] == torch.get_num_threads()
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal"))
        kib = int(total.split()[1])
        assert machine["memory_gib"] == pytest.approx(kib / 2**20, abs=0.1)
    assert machine["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    assert (machine["python"], machine["torch"]) == (platform.python_version(), torch.__version__)


def test_read_results_round_trip(tmp_path):
    raw = {
        "machine": {"cpu": "x", "cores": 2},
        "date": "2026-11-30 01:00 UTC",
        "sections": {
            "retrieval": {
                "date": "2026-11-30 01:00 UTC",
                "cpu": "another CPU",  # a section run on another machine than the file's latest
                "vector_instructions": "avx2 fma",
                "quick": False,
                "seconds": 12.5,
                "targets": [{"target": "t", "value": 1.5, "goal": ">= 1", "met": True}],
                "tables": {"exact": [{"items": 10, "median_s": 0.1}, {"items": 100, "median_s": 1.0}]},
            }
        },
    }
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(raw))
    results = read_results(path)
    assert results.table("retrieval", "exact")["items"].tolist() == [10, 100]
    assert results.targets.to_dict(orient="records") == [
        {"section": "retrieval", "target": "t", "value": 1.5, "goal": ">= 1", "met": True}
    ]
    assert results.runs["seconds"].tolist() == [12.5] and results.runs["cpu"].tolist() == ["another CPU"]
    with pytest.raises(KeyError, match="no table 'training/x'"):
        results.table("training", "x")


def test_read_results_names_a_missing_or_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run make bench"):
        read_results(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"machine": {}}')
    with pytest.raises(ValueError, match="is not a benchmark result file"):
        read_results(tmp_path / "bad.json")


def test_matched_spectrum_vectors_keep_the_real_vectors_shape():
    generator = torch.Generator().manual_seed(0)
    # Anisotropic "real" vectors: a few directions carry most of the variance, plus an offset.
    # Unit vectors in many dimensions, as text embeddings are: normalising the draws then
    # changes little.
    scales = torch.logspace(0, -1, 96)
    real = torch.nn.functional.normalize(torch.randn(4000, 96, generator=generator) * scales + 0.1, dim=1)
    drawn = matched_spectrum_vectors(real, 70_000, seed=1)
    assert drawn.shape == (70_000, 96) and drawn.dtype == torch.float32
    assert torch.allclose(drawn.norm(dim=1), torch.ones(70_000), atol=1e-5)
    spectrum = lambda x: torch.linalg.eigvalsh(torch.cov(x.double().T)).flip(0)  # noqa: E731
    assert torch.allclose(spectrum(drawn)[:4], spectrum(real)[:4], rtol=0.1)
    assert torch.allclose(drawn.mean(dim=0), real.mean(dim=0), atol=0.02)
    assert torch.equal(drawn[:10], matched_spectrum_vectors(real, 10, seed=1))  # seeded, block-independent
    with pytest.raises(ValueError, match="more real vectors than dimensions"):
        matched_spectrum_vectors(real[:96], 5)


def test_cpu_family_reads_the_flags():
    assert cpu_family("avx2 fma avx512f avx512_vnni") == "avx512"
    assert cpu_family(["avx2", "fma", "avx_vnni"]) == "avx2"
    assert cpu_family("") == "other" and cpu_family("unknown") == "other"
    assert cpu_family() == machine_description()["family"]
    assert results_path("out", "avx2") == Path("out") / "latest-avx2.json"
    with pytest.raises(ValueError, match="unknown CPU family 'sse'"):
        results_path("out", "sse")


def _result_file(flags):
    return {"machine": {"cpu": "x", "vector_instructions": flags}, "date": "d",
            "sections": {"book": {"date": "d", "cpu": "x", "vector_instructions": flags, "quick": False, "seconds": 1.0, "targets": [],
                                  "tables": {"notebooks": [{"notebook": "total", "seconds": 1.0}]}}}}


def test_read_family_results_keeps_each_family_apart(tmp_path):
    with pytest.raises(FileNotFoundError, match="no benchmark results"):
        read_family_results(tmp_path)
    (tmp_path / "latest-avx2.json").write_text(json.dumps(_result_file("avx2 fma")))
    (tmp_path / "latest-avx512.json").write_text(json.dumps(_result_file("avx2 fma avx512f")))
    found = read_family_results(tmp_path)
    assert list(found) == ["avx512", "avx2"]  # widest first
    assert found["avx2"].family == "avx2" and found["avx512"].has_table("book", "notebooks")
    (tmp_path / "latest-avx2.json").write_text(json.dumps(_result_file("avx2 avx512f")))
    with pytest.raises(ValueError, match="measured on a avx512 CPU, not avx2"):
        read_family_results(tmp_path)


def test_the_committed_results_name_their_family():
    folder = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    assert not (folder / "latest.json").exists()
    found = read_family_results(folder)
    assert set(found) == {"avx512", "avx2"}
    assert "avx512_vnni" in found["avx512"].machine["vector_instructions"]
    assert "avx512f" not in found["avx2"].machine["vector_instructions"]


def test_cached_choice_times_once_per_key(empty_cache, monkeypatch):
    import recutils.benchmark as benchmark

    calls = []
    key = machine_key("faiss-cpu") | {"dim": 4}
    assert {"cpu", "flags", "threads", "kernel", "variables", "versions"} <= key.keys()
    record = cached_choice("test", key, lambda: calls.append(1) or {"chosen": "a"})
    assert record["chosen"] == "a" and record["key"]["dim"] == 4 and calls == [1]
    assert cached_choice("test", key, lambda: calls.append(1) or {"chosen": "b"})["chosen"] == "a"
    monkeypatch.setattr(benchmark, "_CHOICES", {})  # another process: reads the file
    assert cached_choice("test", key, lambda: calls.append(1) or {"chosen": "b"})["chosen"] == "a"
    assert calls == [1]
    assert cached_choice("test", key | {"dim": 5}, lambda: {"chosen": "c"})["chosen"] == "c"
    assert cached_choice("test", key, lambda: {"chosen": "d"}, refresh=True)["chosen"] == "d"
    # A damaged entry is timed again.
    for path in (empty_cache / "routes").iterdir():
        path.write_text("{")
    monkeypatch.setattr(benchmark, "_CHOICES", {})
    assert cached_choice("test", key, lambda: {"chosen": "e"})["chosen"] == "e"
