"""CPU seconds per process across a benchmark step, from /proc (Linux).

The stream benchmarks are bounded by CPU on small machines: every process a byte crosses
(kubectl, edge, nats-server, relay, API server) spends CPU on it. Printing each one's CPU
per MB next to the MB/s says where a proxied byte's cost goes, and what the ratio to direct
can be at best on the cores there are.
"""

from __future__ import annotations

import os
import resource

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """`pid`'s command name and the /proc stat fields after it (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    head, _, rest = stat.rpartition(")")
    return head[head.index("(") + 1 :], rest.split()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (0.0 once it is gone)."""
    found = _stat(pid)
    if found is None:
        return 0.0
    fields = found[1]
    return (int(fields[11]) + int(fields[12])) / _TICK


def self_cpu_s() -> float:
    """This process's CPU seconds (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_pids(parent: int, name: str) -> list[int]:
    """Pids of `parent`'s children whose command name is `name` (e.g. its nats-server)."""
    found = []
    for entry in os.listdir("/proc"):
        stat = _stat(entry) if entry.isdigit() else None
        if stat is not None and stat[0] == name and int(stat[1][1]) == parent:
            found.append(int(entry))
    return found


class CpuMeter:
    """CPU used by named processes (and this one, as "client") inside `with meter:` blocks,
    summed over every block, plus what `add` reports from elsewhere."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        now["client"] = self_cpu_s()
        return now

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in self._now().items():
            self.add(name, value - self._start[name])

    def add(self, name: str, seconds: float) -> None:
        self.used[name] = self.used.get(name, 0.0) + seconds

    def per_mb(self, megabytes: float) -> dict[str, float]:
        """Milliseconds of CPU per MB moved, per process that used any, and their "total"."""
        out = {name: round(s * 1000 / megabytes, 2) for name, s in self.used.items() if s > 0}
        out["total"] = round(sum(self.used.values()) * 1000 / megabytes, 2)
        return out
