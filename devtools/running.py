"""``make doctor``, ``make keys`` and ``make usage`` first ask: is there a gateway to talk to?

In a checkout those targets are for the ``make run`` or ``make demo`` running there. Without
one, and without ``REDIS_URL``, the commands would fall back to the defaults (a Redis on
127.0.0.1:6379, the real decopy.ai): right for a host that runs the gateway that way, a surprise
for someone who forgot to start the demo. So the targets stop here with what to do instead.
(``python -m api keys …`` and ``python -m worker doctor`` themselves keep the defaults.)
"""

from __future__ import annotations

import os
import sys

from shared import local_run


def main() -> int:
    if os.environ.get("REDIS_URL") or local_run.running() is not None:
        return 0
    print(
        "No `make run` or `make demo` is running from this checkout, and REDIS_URL is not set.\n"
        "Start the gateway in another shell (`make demo`, or `make run`), or point these commands\n"
        "at a gateway's Redis and upstream with REDIS_URL and DECOPY_BASE_URL.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
