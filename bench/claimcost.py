"""What Redis spends per job on the queue protocol: the fair claim against the claims it replaced.

Every job costs Redis one enqueue script (the API) and one claim script per worker woken by its
wake-up (every worker hears every wake-up; one of them takes the job). This drives exactly those
calls, in-process, against a private Redis: :class:`shared.queue.JobQueue` and
:class:`shared.queue.Claimer` as the gateway calls them (the fair path), and the scripts of
before fair queuing (:mod:`bench.claim_reference`, kept only for this comparison), in the same
run on the same Redis, the scenarios' jobs interleaved one by one so a noisy moment on a shared
machine moves them all alike.

Each job is enqueued for one of ``--keys`` keys in turn, claimed by id by each of ``--workers``
woken workers in turn (the first takes it, the rest find nothing), then ended as arq ends it
(queue entry, in-progress key and job data removed; with the gate, its upstream lease released),
so each key's line empties after every job. The fair path is measured without and with
``UPSTREAM_MAX_CONCURRENT`` (the claim then takes the job's upstream lease; the reference claim
took none: the old worker took it afterwards, in ``worker.jobs.budget``'s script, not counted
here). Redis' own time comes from ``INFO commandstats`` taken around the enqueue and claims of
each job (the ending and the fallback polls that look at the fair queue's taken set between jobs
are left out): the scripts' ``usec`` (which includes the commands they run) and the commands
they run. Each figure is the median over ``--repetitions`` repetitions; the line printed also
gives what the enqueue alone cost.

That is the unsaturated regime: every job is taken the moment it is queued, and the claim decides
nothing. The saturated one follows, in the same repetitions: jobs wait (8, over 4 keys), R jobs
run (0, 100, 1000), and a slot frees: one *full* poll (no ids) takes one job, which then ends at
once and another is queued, so as many run and wait at every poll. The reference is the full
read of before fair queuing (``bench.claim_reference``: it walks arq's queue past every running
job, ``queue_read_limit`` 250 as arq sets it for 50 slots), on a queue of its own; the fair one
is :class:`shared.queue.Claimer`'s full poll, with the R jobs in its taken set. The two paths'
polls are interleaved one by one; each figure is the Redis time of the poll (per job taken), the
median over the repetitions. The look each ended job gets at a later full poll (two commands)
falls inside the measured polls only with R = 0 (with R > 0 the running jobs are the oldest).

Gated, a model (``UPSTREAM_MAX_CONCURRENT`` 2, both streams taken, 8 jobs waiting): before fair
queuing a job waited for a stream in a worker slot, trying the budget's acquire script
(``bench.claim_reference``, verbatim from 64b449f^) every ``POLL_S`` x 0.75 = 0.15 s on average
until a stream freed; now it waits in its key's line at no cost, and a stream freed wakes every
worker (4 here), whose full polls take the next job with its lease. Measured: a refused try and
a granted one of the old script, and the 4 full polls per stream freed, interleaved; the model
then assumes streams of 10 s, so each job waits 8 / (2 / 10 s) = 40 s (Little's law), i.e. 267
refused tries before fair queuing. The old path's PUBSUB NUMSUB per heartbeat while waiting is
left out (it would only add to the reference).

``python -m bench.claimcost`` starts its own Redis and prints the figures; ``make bench`` and
``make bench-quick`` run it on their private Redis before the gateway starts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from bench.claim_reference import POLL_S, ReferenceBudget, ReferenceQueue
from shared import names
from shared.queue import Claimer, JobQueue

#: A worker's free slots when a wake-up comes (WORKER_CONCURRENCY's default room).
WANT = 50
IN_PROGRESS_MS = 60_000
#: UPSTREAM_MAX_CONCURRENT of the gated scenarios: room enough that the gate never holds a job.
GATE = 8
JOB = {"model": "decopy-deepseek-v3", "messages": [{"role": "user", "content": "hello"}]}
NOT_SCRIPT = {"evalsha", "eval", "info", "script|load", "script", "flushall"}


@dataclass(frozen=True)
class Scenario:
    path: str  # "fair" or "reference"
    workers: int
    gated: bool = False

    @property
    def name(self) -> str:
        return f"{self.path}_{self.workers}w" + ("_gated" if self.gated else "")


SCENARIOS = (
    Scenario("reference", 1),
    Scenario("fair", 1),
    Scenario("fair", 1, gated=True),
    Scenario("reference", 4),
    Scenario("fair", 4),
    Scenario("fair", 4, gated=True),
)


Stats = dict[str, tuple[int, int]]


async def _stats(r: Redis) -> Stats:
    raw: dict[str, Any] = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in raw.items()}


def _spent(before: Stats, after: Stats) -> tuple[int, int, int]:
    """Between two readings of ``INFO commandstats``: the scripts' µs (their commands' included),
    the commands the scripts ran, and the scripts called."""
    usec = cmds = scripts = 0
    for name, (calls, us) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if name in ("evalsha", "eval"):
            usec += us - u0
            scripts += calls - c0
        elif name not in NOT_SCRIPT:
            cmds += calls - c0
    return usec, cmds, scripts


async def _end(r: Redis, queue: str, job_id: str) -> None:
    """The job ends as arq ends it (never measured): queue entry, in-progress key and job data
    removed, and its upstream lease if it had one."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.zrem(queue, job_id)
        pipe.delete(in_progress_key_prefix + job_id, job_key_prefix + job_id)
        pipe.zrem(names.UPSTREAM_LEASES, job_id)
        await pipe.execute()


class _Run:
    """One scenario's queue objects and what its jobs cost Redis, over one repetition."""

    def __init__(self, r: Redis, sc: Scenario, keys: int) -> None:
        self.r, self.sc, self.keys = r, sc, keys
        self.fair_q = JobQueue(r, max_queue=10_000, expires_s=300)
        self.ref_q = ReferenceQueue(r, max_queue=10_000, expires_s=300)
        gate = GATE if sc.gated else 0
        self.claimers = [Claimer(r, upstream_max_concurrent=gate, lease_ttl_s=30) for _ in range(sc.workers)]
        self.jobs = self.usec = self.cmds = self.scripts = self.enqueue_usec = 0

    def _add(self, before: Stats, after: Stats) -> int:
        usec, cmds, scripts = _spent(before, after)
        self.usec += usec
        self.cmds += cmds
        self.scripts += scripts
        return usec

    async def job(self, n: int, measure: bool) -> None:
        """Job ``n``: enqueued, claimed by each woken worker, ended; measured if ``measure``."""
        r, fair = self.r, self.sc.path == "fair"
        job_id = f"bench{n:09d}"
        key = f"{self.sc.name}_key{n % self.keys}"
        before = await _stats(r) if measure else {}
        if fair:
            assert await self.fair_q.enqueue(job_id, JOB, key=key)
        else:
            assert await self.ref_q.enqueue(job_id, JOB)
        enqueued = await _stats(r) if measure else {}
        taken = []
        for c in self.claimers:  # each woken worker claims, naming the job its wake-up named
            if fair:
                got, _ = await c.claim(
                    want=WANT, in_progress_ms=IN_PROGRESS_MS, read_limit=1000, read_aborts=False, ids=[job_id]
                )
            else:
                got = await self.ref_q.claim_ids(
                    [job_id], want=WANT, in_progress_ms=IN_PROGRESS_MS, read_limit=1000, read_aborts=False
                )
            taken += got
        if measure:
            self.enqueue_usec += self._add(before, enqueued)
            self._add(enqueued, await _stats(r))
            self.jobs += 1
        assert [j for j, _ in taken] == [job_id], (self.sc, taken)
        await _end(r, names.QUEUE, job_id)

    async def full_poll(self) -> None:
        """The fallback poll (not measured). It looks only at the taken jobs due for a look (none
        within IN_PROGRESS_MS) and the 4 oldest, so the taken set holds most of a repetition's
        ended jobs: each claim's ZADD there is O(log n), one command whatever n."""
        if self.sc.path == "fair":
            got, _ = await self.claimers[0].claim(
                want=WANT, in_progress_ms=IN_PROGRESS_MS, read_limit=1000, read_aborts=False
            )
            assert not got

    def figures(self) -> tuple[float, float, float, float]:
        """Redis µs, commands run by scripts, scripts, and the enqueue's µs, per job."""
        n = max(1, self.jobs)
        return self.usec / n, self.cmds / n, self.scripts / n, self.enqueue_usec / n


async def _repetition(r: Redis, jobs: int, keys: int, rep: int) -> dict[str, tuple[float, float, float, float]]:
    """One repetition: every scenario's jobs interleaved one by one (a noisy moment hits them all)."""
    await r.flushall()
    runs = [_Run(r, sc, keys) for sc in SCENARIOS]
    n = 0
    for i in range(20 + jobs):  # 20 unmeasured first: scripts loaded, keys created
        k = (i + rep) % len(runs)
        for run in runs[k:] + runs[:k]:  # rotated
            n += 1
            await run.job(n, measure=i >= 20)
        if i % 50 == 19:
            for run in runs:
                await run.full_poll()
    return {run.sc.name: run.figures() for run in runs}


async def measure(redis_url: str, *, jobs: int, repetitions: int, keys: int, polls: int = 200) -> dict[str, Any]:
    r = Redis.from_url(redis_url)
    runs: dict[str, list[tuple[float, float, float, float]]] = {sc.name: [] for sc in SCENARIOS}
    sat: dict[int, dict[str, list[tuple[float, float]]]] = {n: {"reference": [], "fair": []} for n in RUNNING}
    gated: dict[str, list[tuple[float, float]]] = {"refused": [], "granted": [], "fair": []}
    try:
        for rep in range(repetitions):
            for name, figures in (await _repetition(r, jobs, keys, rep)).items():
                runs[name].append(figures)
            for running, by_path in (await _saturated(r, polls, rep)).items():
                for path, v in by_path.items():
                    sat[running][path].append(v)
            for what, v in (await _gated(r, polls)).items():
                gated[what].append(v)
        await r.flushall()
    finally:
        await r.aclose()
    out: dict[str, Any] = {"jobs": jobs, "repetitions": repetitions, "keys": keys, "want": WANT, "gate": GATE}
    out["saturated"] = {
        "polls": polls,
        "waiting": WAITING,
        "keys": SATURATED_KEYS,
        "read_limit": READ_LIMIT,
        "by_running": {
            str(n): {
                **{
                    path: {
                        "us_per_job": round(statistics.median(v[0] for v in values), 1),
                        "commands_per_job": round(statistics.median(v[1] for v in values), 1),
                        "us_per_job_all": [round(v[0], 1) for v in values],
                    }
                    for path, values in by_path.items()
                },
                "fair_vs_reference": round(
                    statistics.median(f[0] / ref[0] for f, ref in zip(by_path["fair"], by_path["reference"])), 2
                ),
            }
            for n, by_path in sat.items()
        },
    }
    for sc in SCENARIOS:
        values = runs[sc.name]
        out[sc.name] = {
            "us_per_job": round(statistics.median(v[0] for v in values), 1),
            "commands_per_job": round(statistics.median(v[1] for v in values), 2),
            "scripts_per_job": round(statistics.median(v[2] for v in values), 2),
            "enqueue_us_per_job": round(statistics.median(v[3] for v in values), 1),
            "us_per_job_all": [round(v[0], 1) for v in values],
        }
        if sc.path == "fair":  # against the reference of the same repetition (their jobs interleaved)
            ref = runs[f"reference_{sc.workers}w"]
            out[sc.name]["vs_reference"] = round(statistics.median(v[0] / r[0] for v, r in zip(values, ref)), 2)
    g = {k: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs)) for k, vs in gated.items()}
    wait_s = WAITING / (GATED_STREAMS / STREAM_S)
    per_s = g["refused"][0] / OLD_TRY_EVERY_S
    out["gated_model"] = {
        "streams": GATED_STREAMS,
        "workers": GATED_WORKERS,
        "polls": polls,
        "reference_refused_try_us": round(g["refused"][0], 1),
        "reference_refused_try_commands": round(g["refused"][1], 1),
        "reference_granted_try_us": round(g["granted"][0], 1),
        "reference_us_per_second_waited": round(per_s, 1),
        "fair_us_per_stream_freed": round(g["fair"][0], 1),
        "fair_commands_per_stream_freed": round(g["fair"][1], 1),
        "stream_s": STREAM_S,
        "wait_s": wait_s,
        "reference_us_per_job": round(per_s * wait_s + g["granted"][0], 1),
        "fair_us_per_job": round(g["fair"][0], 1),
    }
    return out


# --- saturated: jobs wait, a slot frees, one full poll takes one job ----------------------------

#: Jobs running when a slot frees (quick: the same; fewer polls).
RUNNING = (0, 100, 1000)
#: Jobs waiting meanwhile, spread over SATURATED_KEYS keys (the fair path's lines).
WAITING, SATURATED_KEYS = 8, 4
#: arq's ``queue_read_limit`` for ``WORKER_CONCURRENCY=50``, the default: max(5 x 50, 100).
READ_LIMIT = 250
#: The reference's jobs are kept in a queue of their own: its full read walks every entry.
REFERENCE_QUEUE = "bench:reference:queue"


class _Saturated:
    """One path's queue with ``running`` jobs running and WAITING waiting, and the polls' cost."""

    def __init__(self, r: Redis, path: str, running: int) -> None:
        self.r, self.path, self.running = r, path, running
        self.fair_q = JobQueue(r, max_queue=100_000, expires_s=600)
        self.claimer = Claimer(r)
        self.ref_q = ReferenceQueue(r, max_queue=100_000, expires_s=600, queue=REFERENCE_QUEUE)
        self.queue = names.QUEUE if path == "fair" else REFERENCE_QUEUE
        self.n = self.polls = self.usec = self.cmds = 0

    async def _enqueue(self) -> None:
        self.n += 1
        job_id = f"{self.path}{self.n:09d}"
        if self.path == "fair":
            assert await self.fair_q.enqueue(job_id, JOB, key=f"key{self.n % SATURATED_KEYS}")
        else:
            assert await self.ref_q.enqueue(job_id, JOB)

    async def _poll(self, want: int) -> list[str]:
        if self.path == "fair":  # a full poll: no ids (a slot freed in a full worker)
            got, _ = await self.claimer.claim(
                want=want, in_progress_ms=IN_PROGRESS_MS, read_limit=READ_LIMIT, read_aborts=False
            )
        else:
            got = await self.ref_q.claim_full(
                want=want, in_progress_ms=IN_PROGRESS_MS, read_limit=READ_LIMIT, read_aborts=False
            )
        return [j for j, _ in got]

    async def setup(self) -> None:
        """``running`` jobs taken (their in-progress keys live, in the queue until they end), then
        WAITING more queued."""
        for _ in range(self.running):
            await self._enqueue()
        if self.running:
            assert len(await self._poll(self.running)) == self.running
        for _ in range(WAITING):
            await self._enqueue()

    async def step(self, measure: bool) -> None:
        """A slot frees: one full poll takes one waiting job (measured); that job ends at once and
        another is queued (not measured), so as many run and wait at every step."""
        before = await _stats(self.r) if measure else {}
        got = await self._poll(1)
        if measure:
            usec, cmds, _ = _spent(before, await _stats(self.r))
            self.usec += usec
            self.cmds += cmds
            self.polls += 1
        assert len(got) == 1, (self.path, self.running, got)
        await _end(self.r, self.queue, got[0])
        await self._enqueue()


async def _saturated(r: Redis, polls: int, rep: int) -> dict[int, dict[str, tuple[float, float]]]:
    """One repetition: for each number running, both paths set up side by side on one Redis and
    their polls interleaved one by one (who goes first alternates)."""
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for running in RUNNING:
        await r.flushall()
        paths = [_Saturated(r, p, running) for p in ("reference", "fair")]
        for p in paths:
            await p.setup()
        for i in range(10 + polls):  # 10 unmeasured first
            for p in paths if (i + rep) % 2 else paths[::-1]:
                await p.step(measure=i >= 10)
        out[running] = {p.path: (p.usec / max(1, p.polls), p.cmds / max(1, p.polls)) for p in paths}
    return out


# --- gated (a model): UPSTREAM_MAX_CONCURRENT saturated, jobs wait for an upstream stream ----------

#: The pool's upstream streams (UPSTREAM_MAX_CONCURRENT) and the workers a freed stream wakes.
GATED_STREAMS, GATED_WORKERS = 2, 4
#: The old budget's mean pause between two tries of a waiting job: POLL_S x uniform(0.5, 1.0).
OLD_TRY_EVERY_S = POLL_S * 0.75
#: The model's stream length: with WAITING jobs waiting for GATED_STREAMS streams of this many
#: seconds, each job waits WAITING / (GATED_STREAMS / STREAM_S) seconds (Little's law).
STREAM_S = 10.0


class _Gated:
    """Both paths with every upstream stream taken: the reference's tries of the old budget script
    (refused while the streams are taken, then granted), and the fair path's full polls of
    GATED_WORKERS workers when a stream frees (one takes the next job with its lease)."""

    def __init__(self, r: Redis) -> None:
        self.r = r
        self.budget = ReferenceBudget(r, max_concurrent=GATED_STREAMS, lease_ttl_s=30)
        self.fair_q = JobQueue(r, max_queue=100_000, expires_s=600)
        self.claimers = [
            Claimer(r, upstream_max_concurrent=GATED_STREAMS, lease_ttl_s=30) for _ in range(GATED_WORKERS)
        ]
        self.running: list[str] = []
        self.n = 0
        self.spent = {"refused": [0, 0], "granted": [0, 0], "fair": [0, 0]}  # usec, commands
        self.steps = 0

    async def _measured(self, what: str, call: Any) -> Any:
        before = await _stats(self.r)
        result = await call
        usec, cmds, _ = _spent(before, await _stats(self.r))
        self.spent[what][0] += usec
        self.spent[what][1] += cmds
        return result

    async def _enqueue(self) -> None:
        self.n += 1
        assert await self.fair_q.enqueue(f"gated{self.n:09d}", JOB, key=f"key{self.n % SATURATED_KEYS}")

    async def _full_polls(self) -> list[str]:
        taken: list[str] = []
        for c in self.claimers:
            got, _ = await c.claim(want=WANT, in_progress_ms=IN_PROGRESS_MS, read_limit=READ_LIMIT, read_aborts=False)
            taken += [j for j, _ in got]
        return taken

    async def setup(self) -> None:
        for _ in range(GATED_STREAMS + WAITING):
            await self._enqueue()
        self.running = await self._full_polls()  # the streams' jobs, with their leases
        assert len(self.running) == GATED_STREAMS

    async def step(self, measure: bool) -> None:
        """The reference: a waiting job's try, refused; a stream frees; its next try, granted. The
        fair path: a stream frees (its job ends), every worker's full poll; one takes a job."""
        r = self.r
        tried = self.budget.try_acquire("waiter")
        assert not (await self._measured("refused", tried) if measure else await tried)
        await _end(r, names.QUEUE, self.running.pop(0))  # a stream's job ends
        tried = self.budget.try_acquire("waiter")  # the reference's waiting job takes the stream
        assert await self._measured("granted", tried) if measure else await tried
        await r.zrem(names.UPSTREAM_LEASES, "waiter")  # and the fair path's next job takes it
        polls = self._full_polls()
        taken = await self._measured("fair", polls) if measure else await polls
        assert len(taken) == 1, taken
        self.running += taken
        await self._enqueue()
        self.steps += measure

    def figures(self) -> dict[str, tuple[float, float]]:
        n = max(1, self.steps)
        return {k: (v[0] / n, v[1] / n) for k, v in self.spent.items()}


async def _gated(r: Redis, polls: int) -> dict[str, tuple[float, float]]:
    await r.flushall()
    g = _Gated(r)
    await g.setup()
    for i in range(10 + polls):  # 10 unmeasured first
        await g.step(measure=i >= 10)
    return g.figures()


def line(c: dict[str, Any]) -> str:
    def f(name: str) -> str:
        s = c[name]
        return f"{s['us_per_job']} µs ({s['commands_per_job']:g} cmds; enqueue {s['enqueue_us_per_job']})"

    return (
        f"claim cost (Redis time per job from INFO commandstats, median of {c['repetitions']} x {c['jobs']} jobs, "
        f"{c['keys']} keys; enqueue + the claims of the workers woken): 1 worker: reference claim by id "
        f"{f('reference_1w')}, fair {f('fair_1w')}, fair gated {f('fair_1w_gated')}; 4 workers: reference "
        f"{f('reference_4w')}, fair {f('fair_4w')}, fair gated {f('fair_4w_gated')}; fair / reference (median of the "
        f"repetitions' ratios): {c['fair_1w']['vs_reference']}x, gated {c['fair_1w_gated']['vs_reference']}x with 1 "
        f"worker, {c['fair_4w']['vs_reference']}x, gated {c['fair_4w_gated']['vs_reference']}x with 4"
    )


def saturated_line(c: dict[str, Any]) -> str:
    s = c["saturated"]

    def f(n: str) -> str:
        b = s["by_running"][n]
        ref, fair = b["reference"], b["fair"]
        return (
            f"R={n}: reference full read {ref['us_per_job']} µs ({ref['commands_per_job']:g} cmds), "
            f"fair {fair['us_per_job']} µs ({fair['commands_per_job']:g} cmds), {b['fair_vs_reference']}x"
        )

    return (
        f"claim cost, saturated (a slot frees, {s['waiting']} jobs wait over {s['keys']} keys, R running; one full "
        f"poll takes one job; median of {c['repetitions']} x {s['polls']} polls): "
        + "; ".join(f(n) for n in s["by_running"])
    )


def gated_line(c: dict[str, Any]) -> str:
    g = c["gated_model"]
    return (
        f"claim cost, gated (a model: UPSTREAM_MAX_CONCURRENT={g['streams']} taken, {WAITING} jobs wait; median of "
        f"{c['repetitions']} x {g['polls']}): reference: each job waiting in a worker slot tried the budget's script "
        f"every {OLD_TRY_EVERY_S:g} s on average, {g['reference_refused_try_us']} µs "
        f"({g['reference_refused_try_commands']:g} cmds) a try refused = {g['reference_us_per_second_waited']} µs per "
        f"second waited, + {g['reference_granted_try_us']} µs granted; fair: a stream freed, {g['workers']} workers' "
        f"full polls take the next job, {g['fair_us_per_stream_freed']} µs ({g['fair_commands_per_stream_freed']:g} "
        f"cmds) per job, none while it waits; with streams of {g['stream_s']:g} s each job waits {g['wait_s']:g} s: "
        f"reference {g['reference_us_per_job']} µs per job, fair {g['fair_us_per_job']} µs (besides the enqueue and "
        f"the wake-up's claims)"
    )


def run(redis_url: str, *, jobs: int, repetitions: int, keys: int = 4, polls: int = 200) -> dict[str, Any]:
    """The figures (``make bench``: 9 x 500 jobs, 9 x 200 polls; quick: 5 x 300, 5 x 100), printed
    as three lines."""
    c = asyncio.run(measure(redis_url, jobs=jobs, repetitions=repetitions, keys=keys, polls=polls))
    print(line(c), flush=True)
    print(saturated_line(c), flush=True)
    print(gated_line(c), flush=True)
    return c


def main(argv: list[str] | None = None) -> int:
    from devtools.procs import Stack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=500, help="jobs per scenario and repetition")
    p.add_argument("--repetitions", type=int, default=9)
    p.add_argument("--keys", type=int, default=4, help="keys the jobs are queued for, in turn")
    p.add_argument("--polls", type=int, default=200, help="saturated: full polls per path, R and repetition")
    a = p.parse_args(argv)
    stack = Stack()
    try:
        _, url = stack.redis()
        run(url, jobs=a.jobs, repetitions=a.repetitions, keys=a.keys, polls=a.polls)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
