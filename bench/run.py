"""``make bench`` / ``make bench-quick``: what the gateway adds to the upstream's own latency.

Starts a private Redis, the decopy simulator, two worker processes (``WORKER_CONCURRENCY=50``)
and one API process (``devtools.procs.Stack``), then, for each load (new streams per second),
drives open-loop streaming clients (``bench.load``, separate processes) first straight to the
simulator and then through the gateway, and compares the two. Streams are 30 pieces 20 ms
apart with a 3 ms first piece by default. Every answer is checked piece by piece.

Per load it reports time to first token and total time (p50, p99) of both paths and their
difference (what the gateway adds), relayed pieces per second, the CPU seconds and peak memory
of the API and of the workers, CPU milliseconds per stream (the steady figure on a shared
machine), errors and lost, duplicated, reordered or mixed-up pieces. The full run repeats the
sweep (``--rounds``) and ends with the memory test: 1,000 concurrent streams through one API.
It prints a table and writes ``bench/results/<date>.json`` and a PNG of TTFT against load.
First, on the same private Redis before the gateway starts, it measures what Redis spends per
job on the queue's enqueue and claims, fair queuing against the claim by id it replaced
(``bench.claimcost``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import orjson
import redis

from bench import claimcost, floor
from bench.procstat import reset_peak, sample
from devtools.procs import ROOT, Proc, Stack, wait_workers

RESULTS = ROOT / "bench" / "results"
CLIENT_RATE = 50  # new streams per second one client process drives; above, the load is split


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: p99 is a stream that happened)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


class Bench:
    """The processes under test and the phases run against them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack = Stack()
        self.tmp = Path(tempfile.mkdtemp(prefix="decopy-bench-"))
        self.phase_no = 0
        self.env: dict[str, str] = {}
        self.api: Proc | None = None
        self.api_url = ""
        self.workers: list[Proc] = []
        self.sim: Proc | None = None
        self.sim_url = ""
        self.redis_proc: Proc | None = None
        self.claim_cost: dict[str, Any] | None = None

    # --- processes -------------------------------------------------------------------------

    def start(self) -> None:
        self.redis_proc, redis_url = self.stack.redis()
        if not self.args.no_claim_cost:  # on the private Redis, before anything else uses it
            a = self.args
            self.claim_cost = claimcost.run(
                redis_url, jobs=a.claim_cost_jobs, repetitions=a.claim_cost_repetitions, polls=a.claim_cost_polls
            )
        self.sim, self.sim_url = self.stack.simulator()
        self.env = {
            "REDIS_URL": redis_url,
            "DECOPY_BASE_URL": self.sim_url,
            "WORKER_CONCURRENCY": str(self.args.worker_concurrency),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        }
        self.start_gateway(self.env)

    def start_gateway(self, env: dict[str, str]) -> None:
        self.workers = [self.stack.worker(env) for _ in range(self.args.workers)]
        self.api, self.api_url = self.stack.api(env)
        wait_workers(env["REDIS_URL"], len(self.workers))

    def stop_gateway(self) -> None:
        assert self.api is not None
        self.api.stop()
        for w in self.workers:
            w.stop()
        r = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            r.delete(*(cast(list[bytes], r.keys("decopy:worker:*")) or [b"-"]))
        finally:
            r.close()

    def roles(self) -> dict[str, list[int]]:
        assert self.api and self.sim and self.redis_proc
        return {
            "api": [self.api.pid],
            "workers": [w.pid for w in self.workers],
            "simulator": [self.sim.pid],
            "redis": [self.redis_proc.pid],
        }

    def check_alive(self) -> None:
        for proc in [self.api, *self.workers, self.sim, self.redis_proc]:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} died during the benchmark; its log:\n{proc.log()[-3000:]}")

    # --- one phase: clients at a rate against one path --------------------------------------

    def clients(
        self,
        target: str,
        rate: float,
        duration: float,
        *,
        deltas: int,
        interval_ms: int,
        first_ms: int,
        timeout: float = 60.0,
        dialect: str = "chat",
    ) -> list[dict[str, Any]]:
        """Run the client processes for one phase; their JSON documents."""
        self.phase_no += 1
        k = max(1, math.ceil(rate / CLIENT_RATE))
        url = self.sim_url if target == "direct" else self.api_url
        procs = []
        for j in range(k):
            out = self.tmp / f"phase{self.phase_no}-{j}.json"
            argv = [
                sys.executable,
                "-m",
                "bench.load",
                "--target",
                target,
                "--dialect",
                dialect,
                "--url",
                url,
                "--rate",
                str(rate / k),
                "--duration",
                str(duration),
                "--offset",
                str(j / rate),
                "--deltas",
                str(deltas),
                "--interval-ms",
                str(interval_ms),
                "--first-ms",
                str(first_ms),
                "--timeout",
                str(timeout),
                "--tag",
                f"p{self.phase_no}c{j}x",
                "--out",
                str(out),
            ]
            procs.append((subprocess.Popen(argv, cwd=ROOT), out))
        docs = []
        for popen, out in procs:
            code = popen.wait(duration + timeout + 60)
            if code != 0:
                raise RuntimeError(f"load client exited with {code}")
            docs.append(orjson.loads(out.read_bytes()))
        return docs

    def phase(self, target: str, rate: float, duration: float, dialect: str = "chat") -> dict[str, Any]:
        a = self.args
        kw: dict[str, Any] = {
            "deltas": a.deltas,
            "interval_ms": a.interval_ms,
            "first_ms": a.first_ms,
            "dialect": dialect,
        }
        # Warm up at the phase's own rate first (not measured): each worker's pool of upstream
        # sessions grows to the concurrency the rate needs, and a cloudscraper session costs
        # ~35 ms of CPU to create (SSL context), a one-off that is not the steady cost per stream.
        self.clients(target, rate, a.warmup, **kw)
        roles = self.roles()
        for pids in roles.values():
            for pid in pids:
                reset_peak(pid)
        before = {role: [sample(p) for p in pids] for role, pids in roles.items()}
        docs = self.clients(target, rate, duration, **kw)
        after = {role: [sample(p) for p in pids] for role, pids in roles.items()}
        self.check_alive()
        return summarize(target, rate, docs, before, after)

    # --- measurements outside the load phases ------------------------------------------------

    def idle_redis_load(self, seconds: float) -> dict[str, Any]:
        """Commands per second Redis serves while the gateway is idle: the workers' fallback poll."""
        r = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            first = cast(dict[str, Any], r.info("commandstats"))
            time.sleep(seconds)
            second = cast(dict[str, Any], r.info("commandstats"))
        finally:
            r.close()
        per_cmd = {}
        for name, stats in second.items():
            calls = stats["calls"] - first.get(name, {}).get("calls", 0)
            if name in ("cmdstat_info",):
                continue
            if calls:
                per_cmd[name.removeprefix("cmdstat_")] = round(calls / seconds, 2)
        return {
            "seconds": seconds,
            "commands_per_s": round(sum(per_cmd.values()), 2),
            "by_command": per_cmd,
            "worker_poll_delay_s": float(os.environ.get("WORKER_POLL_DELAY", "0.5")),
        }

    def memory_test(self, streams: int) -> dict[str, Any]:
        """``streams`` streams open at once through one fresh API process: its memory per stream."""
        a = self.args
        self.stop_gateway()
        per_worker = math.ceil(streams / a.workers) + 10
        env = {**self.env, "WORKER_CONCURRENCY": str(per_worker), "MAX_QUEUE": str(streams * 2)}
        self.start_gateway(env)
        assert self.api is not None
        api_pid = self.api.pid
        # Warm up first (imports, first-request allocations, pools), then take the baseline.
        self.clients("gateway", 20, 1.0, deltas=5, interval_ms=20, first_ms=3)
        time.sleep(0.5)
        baseline = sample(api_pid)
        reset_peak(api_pid)
        ramp = a.memory_ramp
        # Each stream lasts 12 s, one piece a second: all are open at once from the end of the
        # ramp on, and the API relays N pieces a second (a faster trickle would measure how much
        # a saturated machine buffers, not what an open stream costs).
        interval_ms = 1000
        deltas = 12
        samples: list[tuple[float, int]] = []
        popen_args = dict(deltas=deltas, interval_ms=interval_ms, first_ms=3, timeout=120.0)
        import threading

        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                samples.append((time.monotonic(), sample(api_pid).rss_kb))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            docs = self.clients("gateway", streams / ramp, ramp, **popen_args)  # type: ignore[arg-type]
        finally:
            done.set()
            watcher.join()
        end = sample(api_pid)
        self.check_alive()
        records = [s for d in docs for s in d["streams"]]
        intervals = [(s["start"], s["start"] + (s["total"] or 0)) for s in records if s["total"] is not None]
        peak_t, peak_rss = max(samples, key=lambda x: x[1])
        open_at_peak = sum(1 for t0, t1 in intervals if t0 <= peak_t <= t1)
        edges = sorted([(t0, 1) for t0, _ in intervals] + [(t1, -1) for _, t1 in intervals])
        most = cur = 0
        for _, step in edges:
            cur += step
            most = max(most, cur)
        growth_kb = max(peak_rss, end.hwm_kb) - baseline.rss_kb
        # RSS against the streams open at each sample. The figure per stream is taken when all of
        # them are first open; the marginal cost is the slope between a quarter and all of them
        # (one-off growth, such as allocator pools sized on first use, left out).
        timeline = [(t - samples[0][0], rss, sum(1 for t0, t1 in intervals if t0 <= t <= t1)) for t, rss in samples]
        quarter = next((x for x in timeline if x[2] >= most // 4), None)
        full = next((x for x in timeline if x[2] >= most), None)
        slope = None
        if quarter is not None and full is not None and full[2] > quarter[2]:
            slope = round((full[1] - quarter[1]) / (full[2] - quarter[2]), 2)
        errors = [s["error"] for s in records if s["error"]]
        return {
            "streams": len(records),
            "completed": sum(1 for s in records if s["total"] is not None and not s["error"]),
            "errors": len(errors),
            "error_examples": errors[:5],
            "lost": sum(s["lost"] for s in records),
            "duplicated": sum(s["duplicated"] for s in records),
            "reordered": sum(s["reordered"] for s in records),
            "mixed": sum(s["mixed"] for s in records),
            "max_concurrent": most,
            "open_at_rss_peak": open_at_peak,
            "api_rss_baseline_kb": baseline.rss_kb,
            "api_rss_peak_kb": max(peak_rss, end.hwm_kb),
            "api_rss_after_kb": end.rss_kb,
            "api_rss_all_open_kb": full[1] if full else None,
            "api_growth_per_stream_kb": round((full[1] - baseline.rss_kb) / most, 2) if full else None,
            "api_peak_growth_per_stream_kb": round(growth_kb / max(1, most), 2),
            "api_marginal_kb_per_stream": slope,
            "rss_timeline": [(round(t, 2), rss, n) for t, rss, n in timeline[::4]],
            "api_cpu_s": round(end.cpu_s - baseline.cpu_s, 2),
            "stream_shape": {"deltas": deltas, "interval_ms": interval_ms, "ramp_s": ramp},
            "worker_concurrency": per_worker,
        }


def summarize(
    target: str, rate: float, docs: list[dict[str, Any]], before: dict[str, list[Any]], after: dict[str, list[Any]]
) -> dict[str, Any]:
    records = [s for d in docs for s in d["streams"]]
    good = [s for s in records if not s["error"] and s["total"] is not None]
    t0 = min(d["t0"] for d in docs)
    ended = max(d["ended"] for d in docs)
    span = ended - t0
    cpu = {role: round(sum(b.cpu_s for b in after[role]) - sum(b.cpu_s for b in before[role]), 3) for role in after}
    peak_mb = {role: round(max(s.hwm_kb for s in after[role]) / 1024, 1) for role in after}
    n = len(records)
    gateway_cpu = cpu["api"] + cpu["workers"]
    lags = [s["start_lag"] for s in records]
    errors = [s["error"] for s in records if s["error"]]
    return {
        "target": target,
        "rate": rate,
        "streams": n,
        "completed": len(good),
        "ttft_p50_ms": ms(pct([s["ttft"] for s in good], 0.5)),
        "ttft_p99_ms": ms(pct([s["ttft"] for s in good], 0.99)),
        "total_p50_ms": ms(pct([s["total"] for s in good], 0.5)),
        "total_p99_ms": ms(pct([s["total"] for s in good], 0.99)),
        "pieces_per_s": round(sum(s["pieces"] for s in records) / span, 1),
        "events_per_s": round(sum(s["events"] for s in records) / span, 1),
        "errors": len(errors),
        "error_examples": errors[:5],
        "lost": sum(s["lost"] for s in records),
        "duplicated": sum(s["duplicated"] for s in records),
        "reordered": sum(s["reordered"] for s in records),
        "mixed": sum(s["mixed"] for s in records),
        "text_mismatches": sum(1 for s in records if not s["text_ok"]),
        "cpu_s": cpu,
        "peak_rss_mb": peak_mb,
        "gateway_cpu_ms_per_stream": round(1000 * gateway_cpu / max(1, n), 3),
        "api_cpu_ms_per_stream": round(1000 * cpu["api"] / max(1, n), 3),
        "workers_cpu_ms_per_stream": round(1000 * cpu["workers"] / max(1, n), 3),
        "wall_s": round(span, 2),
        "client": {
            "processes": len(docs),
            "cpu_s": round(sum(d["client"]["cpu_s"] for d in docs), 3),
            "start_lag_p50_ms": ms(pct(lags, 0.5)),
            "start_lag_p99_ms": ms(pct(lags, 0.99)),
            "start_lag_max_ms": ms(max(lags, default=0.0)),
            "loop_lag_max_ms": ms(max(d["client"]["loop_lag_max_s"] for d in docs)),
        },
    }


def compare(direct: dict[str, Any], gw: dict[str, Any]) -> dict[str, Any]:
    def diff(key: str) -> float | None:
        a, b = direct.get(key), gw.get(key)
        return None if a is None or b is None else round(b - a, 2)

    return {f"added_{k}": diff(k) for k in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms")}


def median_of(rounds: list[dict[str, Any]], path: tuple[str, ...]) -> float | None:
    values = []
    for r in rounds:
        v: Any = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            values.append(float(v))
    return round(statistics.median(values), 3) if values else None


def summary(rounds: list[dict[str, dict[str, Any]]], loads: list[float]) -> list[dict[str, Any]]:
    """Per load: the median over rounds of each figure, and the sums of the faults."""
    rows = []
    for load in loads:
        per = [r[str(load)] for r in rounds if str(load) in r]
        row: dict[str, Any] = {"rate": load, "rounds": len(per)}
        for path in ("direct", "gateway"):
            for key in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms"):
                row[f"{path}_{key}"] = median_of(per, (path, key))
        for key in ("added_ttft_p50_ms", "added_ttft_p99_ms", "added_total_p50_ms", "added_total_p99_ms"):
            row[key] = median_of(per, ("added", key))
            row[key + "_all"] = [p["added"][key] for p in per]
        for key in (
            "pieces_per_s",
            "events_per_s",
            "gateway_cpu_ms_per_stream",
            "api_cpu_ms_per_stream",
            "workers_cpu_ms_per_stream",
        ):
            row[key] = median_of(per, ("gateway", key))
        for role in ("api", "workers"):
            row[f"{role}_cpu_s"] = median_of(per, ("gateway", "cpu_s", role))
            row[f"{role}_peak_rss_mb"] = max(p["gateway"]["peak_rss_mb"][role] for p in per)
        for key in ("errors", "lost", "duplicated", "reordered", "mixed", "text_mismatches"):
            row[key] = sum(p[path][key] for p in per for path in ("direct", "gateway"))
        row["client_start_lag_p99_ms"] = max(
            p[path]["client"]["start_lag_p99_ms"] or 0 for p in per for path in ("direct", "gateway")
        )
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any) -> str:
        return "–" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))

    head = (
        "| streams/s | TTFT p50 direct / gateway (added) ms | TTFT p99 direct / gateway (added) ms "
        "| total p50 added ms | total p99 added ms | pieces/s relayed | gateway CPU ms/stream (API + workers) "
        "| API / workers CPU s | API / workers peak MB | errors | lost / dup / reordered / mixed |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {f(r['rate'])} | {f(r['direct_ttft_p50_ms'])} / {f(r['gateway_ttft_p50_ms'])} "
            f"(**{f(r['added_ttft_p50_ms'])}**) | {f(r['direct_ttft_p99_ms'])} / {f(r['gateway_ttft_p99_ms'])} "
            f"(**{f(r['added_ttft_p99_ms'])}**) | {f(r['added_total_p50_ms'])} | {f(r['added_total_p99_ms'])} "
            f"| {f(r['pieces_per_s'])} | {f(r['gateway_cpu_ms_per_stream'])} ({f(r['api_cpu_ms_per_stream'])} + "
            f"{f(r['workers_cpu_ms_per_stream'])}) | {f(r['api_cpu_s'])} / {f(r['workers_cpu_s'])} "
            f"| {f(r['api_peak_rss_mb'])} / {f(r['workers_peak_rss_mb'])} | {r['errors']} "
            f"| {r['lost']} / {r['duplicated']} / {r['reordered']} / {r['mixed']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = [r["rate"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=90)
    for key, color in (("direct", "tab:blue"), ("gateway", "tab:red")):
        label = "straight to the simulator" if key == "direct" else "through the gateway"
        ax.plot(loads, [r[f"{key}_ttft_p50_ms"] for r in rows], "o-", color=color, label=f"{label}, p50")
        ax.plot(loads, [r[f"{key}_ttft_p99_ms"] for r in rows], "s--", color=color, label=f"{label}, p99")
    ax.set_xlabel("new streams per second")
    ax.set_ylabel("time to first token (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_title(doc: dict[str, Any]) -> str:
    c, m = doc["config"], doc["machine"]
    return (
        f"{c['deltas']} pieces {c['interval_ms']} ms apart, {c['workers']} workers; {m['nproc']} cores, "
        f"{m['cpu_model']}, Python {m['python']}"
    )


def dialect_phases(bench: Bench, a: argparse.Namespace) -> dict[str, Any]:
    """The same load through each dialect, back to back: CPU per stream and its ratio to chat's."""
    out: dict[str, Any] = {"load": a.dialect_load, "phases": {}}
    for dialect in dict.fromkeys(["chat", *a.dialects]):
        out["phases"][dialect] = bench.phase("gateway", a.dialect_load, a.duration, dialect=dialect)
    chat_cpu = out["phases"]["chat"]["gateway_cpu_ms_per_stream"]
    for dialect, gw in out["phases"].items():
        cpu = gw["gateway_cpu_ms_per_stream"]
        gw["cpu_vs_chat"] = round(cpu / chat_cpu, 2) if chat_cpu and cpu is not None else None
        print(
            f"dialect {dialect} at {a.dialect_load:g}/s: gateway CPU {cpu} ms/stream ({gw['cpu_vs_chat']}x chat); "
            f"TTFT p50 {gw['ttft_p50_ms']} ms; errors {gw['errors']}; lost/dup/reord/mixed {gw['lost']}/"
            f"{gw['duplicated']}/{gw['reordered']}/{gw['mixed']}",
            flush=True,
        )
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="two loads, short phases, no memory test, a shorter claim cost (about 1.5 min)",
    )
    p.add_argument(
        "--loads",
        type=lambda s: [float(x) for x in s.split(",")],
        default=None,
        help="new streams per second, comma-separated (default 10,25,50,100; quick: 25,100)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds of arrivals per phase (20; quick 4)")
    p.add_argument("--rounds", type=int, default=None, help="times the sweep is run (2; quick 1)")
    p.add_argument(
        "--memory-streams", type=int, default=None, help="concurrent streams of the memory test (1000; quick 0 = none)"
    )
    p.add_argument("--memory-ramp", type=float, default=5.0, help="seconds over which the memory test opens them")
    p.add_argument(
        "--dialects",
        default="chat,responses,messages",
        help="comma-separated gateway APIs whose CPU per stream is compared at --dialect-load ('chat' alone skips it)",
    )
    p.add_argument("--dialect-load", type=float, default=25.0, help="streams per second of the dialect comparison")
    p.add_argument("--deltas", type=int, default=30)
    p.add_argument("--interval-ms", type=int, default=20)
    p.add_argument("--first-ms", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-concurrency", type=int, default=50)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--name", default=None, help="file name without extension (default: the date)")
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds of unmeasured load before each phase (2; quick 1)"
    )
    p.add_argument("--idle-seconds", type=float, default=None, help="idle Redis load measured over (5; quick 2)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-floor", action="store_true", help="skip the per-hop floor (bench/floor.py)")
    p.add_argument(
        "--no-claim-cost", action="store_true", help="skip the queue's Redis cost per job (bench/claimcost.py)"
    )
    p.add_argument("--claim-cost-jobs", type=int, default=None, help="jobs per claim-cost repetition (500; quick 300)")
    p.add_argument("--claim-cost-repetitions", type=int, default=None, help="claim-cost repetitions (9; quick 5)")
    p.add_argument(
        "--claim-cost-polls",
        type=int,
        default=None,
        help="claim cost, saturated: full polls per repetition (200; quick 100)",
    )
    p.add_argument("--floor-seconds", type=float, default=None, help="seconds per floor measurement (4; quick 2)")
    p.add_argument("--replot", type=Path, default=None, help="only draw the PNG of a results JSON again")
    a = p.parse_args(argv)
    if a.replot is not None:
        doc = orjson.loads(a.replot.read_bytes())
        plot(doc["summary"], a.replot.with_suffix(".png"), plot_title(doc))
        return 0
    a.dialects = [d.strip() for d in a.dialects.split(",") if d.strip()]
    a.loads = a.loads or ([25.0, 100.0] if a.quick else [10.0, 25.0, 50.0, 100.0])
    a.duration = a.duration or (4.0 if a.quick else 20.0)
    a.rounds = a.rounds or (1 if a.quick else 2)
    a.claim_cost_jobs = a.claim_cost_jobs or (300 if a.quick else 500)
    a.claim_cost_repetitions = a.claim_cost_repetitions or (5 if a.quick else 9)
    a.claim_cost_polls = a.claim_cost_polls or (100 if a.quick else 200)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 2.0)
    if a.memory_streams is None:
        a.memory_streams = 0 if a.quick else 1000
    name = a.name or (dt.date.today().isoformat() + ("-quick" if a.quick else ""))
    a.out_dir.mkdir(parents=True, exist_ok=True)

    bench = Bench(a)
    started = time.time()
    load_before = os.getloadavg()
    rounds: list[dict[str, dict[str, Any]]] = []
    memory: dict[str, Any] | None = None
    dialects: dict[str, Any] | None = None
    try:
        bench.start()
        idle = bench.idle_redis_load(a.idle_seconds or (2.0 if a.quick else 5.0))
        print(f"idle Redis load (workers' fallback poll): {idle['commands_per_s']} commands/s", flush=True)
        for rnd in range(a.rounds):
            results: dict[str, dict[str, Any]] = {}
            for load in a.loads:
                direct = bench.phase("direct", load, a.duration)
                gw = bench.phase("gateway", load, a.duration)
                results[str(load)] = {"direct": direct, "gateway": gw, "added": compare(direct, gw)}
                add = results[str(load)]["added"]
                print(
                    f"round {rnd + 1} load {load:g}/s: TTFT p50 {direct['ttft_p50_ms']} -> {gw['ttft_p50_ms']} ms "
                    f"(+{add['added_ttft_p50_ms']}), p99 {direct['ttft_p99_ms']} -> {gw['ttft_p99_ms']} ms "
                    f"(+{add['added_ttft_p99_ms']}); total p50 +{add['added_total_p50_ms']} ms; "
                    f"gateway CPU {gw['gateway_cpu_ms_per_stream']} ms/stream; errors {direct['errors']}+"
                    f"{gw['errors']}; lost/dup/reord/mixed {gw['lost']}/{gw['duplicated']}/{gw['reordered']}/"
                    f"{gw['mixed']}; client start lag p99 {gw['client']['start_lag_p99_ms']} ms",
                    flush=True,
                )
            rounds.append(results)
        if len(a.dialects) > 1 or a.dialects != ["chat"]:
            dialects = dialect_phases(bench, a)
        if a.memory_streams:
            memory = bench.memory_test(a.memory_streams)
            print(
                f"memory: {memory['completed']}/{memory['streams']} streams completed, at most "
                f"{memory['max_concurrent']} at once; API RSS {memory['api_rss_baseline_kb']} -> "
                f"{memory['api_rss_all_open_kb']} kB with all open = "
                f"{memory['api_growth_per_stream_kb']} kB per stream "
                f"({memory['api_marginal_kb_per_stream']} kB per added stream; peak {memory['api_rss_peak_kb']} kB = "
                f"{memory['api_peak_growth_per_stream_kb']} kB per stream)",
                flush=True,
            )
    finally:
        bench.stack.stop()
    hop_floor = None
    if not a.no_floor:
        hop_floor = floor.run_all(
            streams=15, interval_ms=float(a.interval_ms), seconds=a.floor_seconds or (2.0 if a.quick else 4.0)
        )
        cost = {h["mode"]: h["cpu_us_per_message"] for h in hop_floor["hops"]}
        hop_floor["min_gateway_ms_per_stream"] = round(2 * cost["callback"] * a.deltas / 1000, 2)
        print(
            f"floor: one relay hop (wake-up, read, write) costs {cost['callback']} µs of CPU per piece from a "
            f"callback, {cost['task']} µs from a task ({cost['task+reply']} µs awaiting a reply); two hops per "
            f"piece: at least {hop_floor['min_gateway_ms_per_stream']} ms per {a.deltas}-piece stream",
            flush=True,
        )
    rows = summary(rounds, a.loads)
    doc = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "seconds": round(time.time() - started, 1),
        "config": {
            "loads": a.loads,
            "duration_s": a.duration,
            "rounds": a.rounds,
            "warmup_s": a.warmup,
            "deltas": a.deltas,
            "interval_ms": a.interval_ms,
            "first_ms": a.first_ms,
            "workers": a.workers,
            "worker_concurrency": a.worker_concurrency,
            "api_processes": 1,
        },
        "idle_redis": idle,
        "summary": rows,
        "rounds": rounds,
        "memory": memory,
        "dialects": dialects,
        "floor": hop_floor,
        "claim_cost": bench.claim_cost,
    }
    json_path = a.out_dir / f"{name}.json"
    json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print()
    print(table(rows))
    if bench.claim_cost is not None:
        print(claimcost.line(bench.claim_cost))
        print(claimcost.saturated_line(bench.claim_cost))
        print(claimcost.gated_line(bench.claim_cost))
    print(f"\nwrote {json_path}")
    if not a.no_plot:
        png = a.out_dir / f"{name}.png"
        plot(rows, png, plot_title(doc))
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
