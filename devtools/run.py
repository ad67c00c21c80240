"""``make run`` / ``make demo``: the whole gateway on this machine, in the foreground.

Starts a private Redis unless ``REDIS_URL`` is set, the API on ``API_HOST:API_PORT``
(127.0.0.1:8088 by default) and two worker processes (``--workers``). ``--demo`` also starts
the decopy simulator and points the workers at it, so it works without network. Ctrl-C stops all.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from devtools.procs import Stack, http_ok, wait_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo", action="store_true", help="use the local decopy simulator as the upstream")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    stack = Stack()
    env: dict[str, str] = {}
    try:
        if not os.environ.get("REDIS_URL"):
            _, env["REDIS_URL"] = stack.redis()
            print(f"private Redis at {env['REDIS_URL']} (set REDIS_URL to use your own)")
        if args.demo:
            _, env["DECOPY_BASE_URL"] = stack.simulator()
            print(f"decopy simulator at {env['DECOPY_BASE_URL']}")
        for _ in range(args.workers):
            stack.worker(env)
        host = os.environ.get("API_HOST", "127.0.0.1")
        port = int(os.environ.get("API_PORT", "8088"))
        api = stack.spawn("api", [sys.executable, "-m", "api"], env)
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        wait_for(lambda: http_ok(base + "/healthz"), 20, "api", api.popen)
        key = os.environ.get("API_MASTER_KEY") or "anything"
        print(
            f"""
The gateway is up: {base}/v1  ({args.workers} workers; logs in {stack.workdir})

  curl -N {base}/v1/chat/completions -H 'Content-Type: application/json' \\
       -H 'Authorization: Bearer {key}' \\
       -d '{{"model": "decopy-deepseek-v3", "stream": true, "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python: OpenAI(base_url="{base}/v1", api_key="{key}")

Ctrl-C stops everything.""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(p.alive() for p in stack.procs):
            time.sleep(0.5)
        dead = [p for p in stack.procs if not p.alive()]
        for p in dead:
            print(f"{p.name} exited ({p.popen.returncode}); its log:\n{p.log()[-3000:]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
