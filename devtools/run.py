"""``make run`` / ``make demo``: the whole gateway on this machine, in the foreground.

Starts a private Redis unless ``REDIS_URL`` is set, the API on ``API_HOST:API_PORT``
(127.0.0.1:8088 by default) and two worker processes (``--workers``). ``--demo`` also starts
the decopy simulator, answering like a model (``tests/sim_persona.py``), and points the workers
at it, so it works without network. Ctrl-C stops all.

What a newcomer needs next is printed in the banner and kept in ``.run/`` (git-ignored):

- the master key: ``API_MASTER_KEY`` when set, else one generated on the first run and kept in
  ``.run/master-key`` for the next ones, so the dashboard and the admin API work at once;
- ``.run/gateway.json`` while it runs: the Redis, upstream and key the processes use, which the
  operator commands (``make doctor``, ``make keys``, ``make usage``) read (:mod:`shared.local_run`);
- ``.run/logs/<time>-<mode>/``: every process's log, kept after it stops (the last few runs).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

from devtools.procs import ROOT, Stack, http_ok, wait_for
from shared import local_run

#: How many runs' log folders are kept.
KEEP_RUNS = 5


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def master_key() -> tuple[str, str]:
    """The master key and where it comes from: the environment, or generated once and kept."""
    given = os.environ.get("API_MASTER_KEY")
    if given:
        return given, "from API_MASTER_KEY"
    path = local_run.MASTER_KEY_FILE
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if kept:
        return kept, f"kept in {_shown(path)} since the first run"
    key = "sk-local-" + secrets.token_urlsafe(24)
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key, f"generated, kept in {_shown(path)} for the next runs"


def log_folder(mode: str) -> Path:
    """A new folder for this run's logs; the oldest beyond ``KEEP_RUNS`` are removed."""
    logs = local_run.RUN_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in logs.iterdir() if p.is_dir())[: -(KEEP_RUNS - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    folder = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{mode}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{mode}-{suffix}"
    folder.mkdir()
    return folder


def processes(stack: Stack) -> str:
    """``api 12 · worker 13 14 · redis 10``: what to ``kill`` to see a failure happen (README)."""
    names: dict[str, list[str]] = {}
    for proc in stack.procs:
        names.setdefault({"sim": "simulator"}.get(proc.name, proc.name), []).append(str(proc.pid))
    return " · ".join(f"{name} {' '.join(pids)}" for name, pids in names.items())


def banner(
    *, mode: str, base: str, key: str, key_origin: str, env: dict[str, str], workers: int, logs: Path, pids: str
) -> str:
    redis = env.get("REDIS_URL", "")
    upstream = env.get("DECOPY_BASE_URL", "https://api.decopy.ai")
    shown_key = "$API_MASTER_KEY" if key_origin == "from API_MASTER_KEY" else key
    lines = [
        "",
        f"The gateway is up, {workers} workers"
        + (", with the bundled decopy simulator as its upstream (demo)." if mode == "demo" else "."),
        "",
        f"  API         {base}/v1",
        f"  dashboard   {base}/dashboard   (log in with the master key)",
        f"  master key  {shown_key}   ({key_origin})",
        f"  Redis       {local_run.redact(redis)}{'   (private to this run)' if 'REDIS_URL' not in os.environ else ''}",
        f"  upstream    {local_run.redact(upstream)}{'   (the decopy simulator)' if mode == 'demo' else ''}",
        f"  processes   {pids}",
        f"  logs        {_shown(logs)}/   (kept when it stops)",
        f"  settings    {_shown(local_run.STATE_FILE)}: `make doctor`, `make keys`, `make usage` talk to this gateway",
        "",
        f"  curl -N {base}/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"       -H 'Authorization: Bearer {shown_key}' \\",
        '       -d \'{"model": "decopy-deepseek-r1", "stream": true,'
        ' "messages": [{"role": "user", "content": "Hello!"}]}\'',
        "",
        f'  python: OpenAI(base_url="{base}/v1", api_key="{shown_key}")',
        "",
    ]
    if mode == "demo":
        lines += ['The README\'s "Trying things in the demo" shows how to make the simulator fail on purpose.', ""]
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo", action="store_true", help="use the local decopy simulator as the upstream")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    mode = "demo" if args.demo else "run"
    # Ctrl-C must stop everything even when started with SIGINT ignored (as a shell's background job is).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    logs = log_folder(mode)
    stack = Stack(workdir=logs, keep_logs=True)
    key, key_origin = master_key()
    env: dict[str, str] = {"API_MASTER_KEY": key}
    try:
        if os.environ.get("REDIS_URL"):
            env["REDIS_URL"] = os.environ["REDIS_URL"]
        else:
            _, env["REDIS_URL"] = stack.redis()
        if args.demo:
            _, env["DECOPY_BASE_URL"] = stack.simulator(demo=True)
        elif os.environ.get("DECOPY_BASE_URL"):
            env["DECOPY_BASE_URL"] = os.environ["DECOPY_BASE_URL"]
        for _ in range(args.workers):
            stack.worker(env)
        host = os.environ.get("API_HOST", "127.0.0.1")
        port = int(os.environ.get("API_PORT", "8088"))
        api = stack.spawn("api", [sys.executable, "-m", "api"], env)
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        try:
            wait_for(lambda: http_ok(base + "/healthz"), 20, "api", api.popen)
        except (RuntimeError, TimeoutError) as exc:
            print(f"the API did not start ({exc}); its log:\n{api.log()[-3000:]}", file=sys.stderr)
            print(f"(is port {port} taken? set API_PORT to use another one)", file=sys.stderr)
            return 1
        local_run.write(
            {
                "pid": os.getpid(),
                "mode": mode,
                "api": base,
                "dashboard": base + "/dashboard",
                "logs": str(logs),
                "settings": env,
            }
        )
        print(
            banner(
                mode=mode,
                base=base,
                key=key,
                key_origin=key_origin,
                env=env,
                workers=args.workers,
                logs=logs,
                pids=processes(stack),
            ),
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # A worker that dies is reported and the rest runs on (the README has you kill one to see
        # what a client gets); without the API there is nothing left to try, so everything stops.
        reported: set[int] = set()
        while api.alive():
            for p in stack.procs:
                if not p.alive() and p.pid not in reported:
                    reported.add(p.pid)
                    print(f"{p.name} {p.pid} exited ({p.popen.returncode}); its log: {_shown(p.log_path)}", flush=True)
            time.sleep(0.5)
        print(f"api exited ({api.popen.returncode}); its log:\n{api.log()[-3000:]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        local_run.remove(os.getpid())
        stack.stop()
        print(f"\nStopped. The logs are kept in {_shown(logs)}/", flush=True)


if __name__ == "__main__":
    sys.exit(main())
