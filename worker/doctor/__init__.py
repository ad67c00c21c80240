"""The upstream doctor: check the configured upstream step by step and say what broke.

``python -m worker doctor [--json]`` runs it where the worker runs (same settings, same proxy,
same cloudscraper sessions and client through :class:`worker.upstream.decopy.client.DecopyUpstream`), prints one
line per step with its timing and verdict, and exits 0 only when an answer streamed end to end.
The dashboard's "run again" button enqueues the same run as a worker job (:func:`doctor_job`),
so it too goes out the way real traffic does. Either way the last report is kept in Redis
(``shared.names.DOCTOR_LAST``) for the dashboard. Without ``REDIS_URL`` in its environment the CLI
takes the settings of the ``make run``/``make demo`` running from this checkout
(:mod:`shared.local_run`); its first line says which Redis and upstream it uses, and why.

Steps, in order; the first failure stops the network steps (later ones are reported as not
run), while each model is checked even if another model failed:

- ``resolve``     the upstream's host name (or each proxy's, when ``DECOPY_PROXY`` is set: the
  proxy resolves the upstream then);
- ``reach``       a TCP connection to the upstream, or to each proxy and, for an https
  upstream, a ``CONNECT`` tunnel through it;
- ``tls``         the TLS handshake with the upstream host (certificate checked as requests
  checks it); skipped for an ``http://`` upstream such as the simulator;
- ``cloudflare``  the ``create-job`` call's answers: was a challenge served, and did
  cloudscraper get past it?
- ``create-job``  the same call judged as the protocol expects: HTTP 200, ``code`` 100000 and a
  ticket, decopy's job id (decopy answers another code when it dislikes a field or header);
- ``stream``      the job's event stream: events parsed, lines skipped, end marker seen;
- ``model <id>``  a tiny prompt to each configured model, through the worker's own code path.

The package: :mod:`~worker.doctor.report` (the steps and the report), :mod:`~worker.doctor.probes`
(resolve, reach and TLS on asyncio's own sockets), :mod:`~worker.doctor.protocol` (create-job,
the stream and each model, through the worker's own upstream code), :mod:`~worker.doctor.run`
(one run, in order) and :mod:`~worker.doctor.render` (the CLI's lines, Redis, the worker job).
Every step runs on one event loop: the worker job's own, or the CLI's ``asyncio.run``. Two more
checks have a CLI of their own: ``--transports`` (:mod:`~worker.doctor.transports`: each of
decopy's transports, aiohttp and curl_cffi, tried the same way) and ``--upstreams``
(:mod:`~worker.doctor.upstreams`: every route target's breaker, last failure and answer).
"""

from __future__ import annotations

from worker.doctor.render import doctor_job, format_step, main, record, run_doctor
from worker.doctor.report import Report, Step
from worker.doctor.run import Doctor

__all__ = ["Doctor", "Report", "Step", "doctor_job", "format_step", "main", "record", "run_doctor"]
