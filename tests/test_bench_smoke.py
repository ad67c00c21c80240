"""The benchmark harness runs end to end and checks what it relays (a tiny load, a few seconds).

Speed is not asserted here (it is the benchmark's job, on a quiet machine); this proves the
harness starts its processes, drives both paths, checks every answer and writes its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import Stream, check, pieces_for
from devtools.procs import ROOT
from tests.conftest import Gateway

pytest.importorskip("aiohttp", reason="the load client needs the test extra's aiohttp")

FIGURES = (
    "ttft_p50_ms",
    "ttft_p99_ms",
    "total_p50_ms",
    "total_p99_ms",
    "pieces_per_s",
    "errors",
    "lost",
    "duplicated",
    "reordered",
    "mixed",
    "text_mismatches",
    "cpu_s",
    "peak_rss_mb",
    "gateway_cpu_ms_per_stream",
)


def test_bench_harness_tiny_load(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--loads",
            "5",
            "--duration",
            "2",
            "--rounds",
            "1",
            "--memory-streams",
            "0",
            "--deltas",
            "5",
            "--idle-seconds",
            "0.5",
            "--warmup",
            "0.5",
            "--floor-seconds",
            "0.5",
            "--claim-cost-jobs",
            "30",
            "--claim-cost-repetitions",
            "1",
            "--claim-cost-polls",
            "10",
            "--no-plot",
            "--out-dir",
            str(tmp_path),
            "--name",
            "smoke",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "smoke.json").read_text())
    load = doc["rounds"][0]["5.0"]
    for path in ("direct", "gateway"):
        phase = load[path]
        for key in FIGURES:
            assert key in phase, f"{path} lacks {key}"
        assert phase["streams"] == 10 and phase["completed"] == 10, phase["error_examples"]
        assert (
            phase["errors"],
            phase["lost"],
            phase["duplicated"],
            phase["reordered"],
            phase["mixed"],
            phase["text_mismatches"],
        ) == (0, 0, 0, 0, 0, 0)
        assert phase["ttft_p50_ms"] > 0 and phase["total_p99_ms"] >= phase["ttft_p99_ms"]
        assert phase["pieces_per_s"] > 0
    gw = load["gateway"]
    assert gw["cpu_s"]["api"] > 0 and gw["cpu_s"]["workers"] > 0  # the gateway did the work
    assert set(load["added"]) == {"added_ttft_p50_ms", "added_ttft_p99_ms", "added_total_p50_ms", "added_total_p99_ms"}
    row = doc["summary"][0]
    assert row["rate"] == 5.0 and row["lost"] == 0 and row["errors"] == 0
    assert doc["machine"]["nproc"] and doc["idle_redis"]["commands_per_s"] >= 0
    assert "| streams/s |" in proc.stdout
    hops = {h["mode"]: h for h in doc["floor"]["hops"]}
    assert set(hops) == {"callback", "task", "task+reply"}
    for hop in hops.values():  # every message sent crossed the relay, and its CPU was measured
        assert hop["messages"] > 0 and hop["relayed"] == hop["messages"] and hop["cpu_us_per_message"] > 0
    cost = doc["claim_cost"]  # the queue's Redis time per job, fair and reference, on the bench's Redis
    for name in ("reference_1w", "fair_1w", "fair_1w_gated", "reference_4w", "fair_4w", "fair_4w_gated"):
        assert cost[name]["us_per_job"] > 0 and cost[name]["commands_per_job"] >= 3, (name, cost[name])
    assert cost["fair_4w"]["scripts_per_job"] == 5 and cost["reference_1w"]["scripts_per_job"] == 2
    assert cost["fair_4w"]["vs_reference"] > 0
    assert "claim cost (Redis time per job" in proc.stdout
    sat = cost["saturated"]["by_running"]  # a slot freed while jobs wait: one full poll per job taken
    assert set(sat) == {"0", "100", "1000"}
    for running, b in sat.items():
        assert b["reference"]["us_per_job"] > 0 and b["fair"]["us_per_job"] > 0, (running, b)
    # the old full read looks at every running job; the fair full poll at the same few whatever runs
    assert sat["1000"]["reference"]["commands_per_job"] > 1000 > 10 * sat["1000"]["fair"]["commands_per_job"]
    assert sat["1000"]["fair"]["commands_per_job"] == sat["100"]["fair"]["commands_per_job"]
    assert "claim cost, saturated (a slot frees" in proc.stdout
    gated = cost["gated_model"]  # before: every waiting job tried the budget's script (TIME and 3 reads)
    assert gated["reference_refused_try_commands"] == 4 and gated["fair_us_per_stream_freed"] > 0, gated
    assert "claim cost, gated (a model" in proc.stdout
    assert doc["floor"]["min_gateway_ms_per_stream"] == round(2 * hops["callback"]["cpu_us_per_message"] * 5 / 1000, 2)


def _checked(texts: list[str]) -> Stream:
    s = Stream(sid="ab1", scheduled=0.0, texts=texts)
    check(s, 4)
    return s


def test_answer_check_counts_every_fault() -> None:
    good = pieces_for("ab1", 4)  # "ab1.0 ", "ab1.1 ", ...
    ok = _checked(["".join(good[:2]), *good[2:]])  # joined pieces are fine: only the text counts
    assert (ok.text_ok, ok.pieces, ok.lost, ok.duplicated, ok.reordered, ok.mixed) == (True, 4, 0, 0, 0, 0)
    lost = _checked([good[0], good[1], good[3]])
    assert (lost.text_ok, lost.lost) == (False, 1)
    dup = _checked([good[0], good[1], good[1], good[2], good[3]])
    assert (dup.text_ok, dup.duplicated, dup.lost) == (False, 1, 0)
    reordered = _checked([good[0], good[2], good[1], good[3]])
    assert (reordered.text_ok, reordered.reordered, reordered.lost) == (False, 1, 0)
    mixed = _checked([*good[:2], "ab2.2 ", good[2], good[3]])
    assert (mixed.text_ok, mixed.mixed, mixed.lost) == (False, 1, 0)


@pytest.mark.parametrize("dialect", ["responses", "messages", "completions"])
def test_load_client_drives_each_dialect(gateway: Gateway, tmp_path: Path, dialect: str) -> None:
    """The benchmark's load client drives the other front doors (``make bench BENCH_ARGS=--dialects
    chat,responses,messages``): it reads each one's stream and checks every answer piece by piece."""
    out = tmp_path / f"{dialect}.json"
    argv = [sys.executable, "-m", "bench.load", "--target", "gateway", "--dialect", dialect, "--url", gateway.base_url]
    argv += ["--rate", "5", "--duration", "1", "--deltas", "5", "--tag", f"d{dialect[:3]}", "--out", str(out)]
    subprocess.run(argv, cwd=ROOT, check=True, timeout=60)
    streams = json.loads(out.read_text())["streams"]
    assert len(streams) == 5
    assert all(s["error"] is None and s["text_ok"] and s["lost"] == 0 and s["ttft"] > 0 for s in streams), streams
