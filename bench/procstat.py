"""CPU time and memory of the benchmarked processes, read from Linux's /proc.

Read directly rather than through psutil: the figures needed are two fields of
``/proc/<pid>/stat`` (utime, stime: all threads included) and two of ``/proc/<pid>/status``
(VmRSS now, VmHWM the peak), and ``/proc/<pid>/clear_refs`` resets the peak so each phase gets
its own. The kernel keeps VmHWM itself, so the peak is exact, not the best of some samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu_s: float  # user + system seconds since the process started
    rss_kb: int
    hwm_kb: int  # peak RSS since start or the last reset_peak()


def sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)
    rss = hwm = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith(b"VmHWM:"):
                hwm = int(line.split()[1])
    return Sample(cpu, rss, hwm)


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not allowed here: the peak then covers the process's whole life
