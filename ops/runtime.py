"""Process-wide runtime settings every `kubegate` process starts with (GC thresholds, malloc
thresholds, uvloop).

Garbage collection: each process holds a large, long-lived read model (the policy state of an
edge or relay, the audit runner's batches) that grows by a few objects per event. With
CPython's default thresholds (700, 10, 10) the collector re-scans that young state every few
hundred allocations: in a rebuild of 100k control events it was over half the CPU of
`PolicyState.apply` (10.4 -> 5.7 us per event with these settings). Cycles are still
collected, only in larger, rarer passes.
"""

from __future__ import annotations

import ctypes
import gc
import sys

GC_THRESHOLDS = (10_000, 20, 20)
"""(gen0 allocations, gen0 runs per gen1, gen1 runs per gen2)."""


def setup_process() -> None:
    """Everything a kubegate process starts with (`tune_gc`, `tune_malloc`, `use_uvloop`): one
    call for every entry point, so none runs with part of it (a benchmark once measured without
    the GC thresholds and uvloop)."""
    tune_gc()
    tune_malloc()
    use_uvloop()


def tune_gc() -> None:
    """Apply `GC_THRESHOLDS` (idempotent; call once at process start)."""
    gc.set_threshold(*GC_THRESHOLDS)


MALLOC_MMAP_THRESHOLD = 32 << 20
"""Allocations below this come from the heap, not a mmap of their own (glibc: 128 KiB at start,
raised to the largest freed mmap up to 32 MiB; fixing it turns that adjustment off, so it is
fixed at that maximum: with 1 MiB, the simulator's 21 MB list bodies were faulted in each time
and its direct list cost 10-30% more CPU)."""
MALLOC_TRIM_THRESHOLD = 64 << 20
"""Free memory at the top of the heap kept for reuse before it goes back to the system."""
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Keep glibc from handing the buffers of a byte stream back to the kernel after each use.

    Streams move 100-256 KiB buffers (TLS records joined, NATS frames, payloads). Around glibc's
    moving thresholds such buffers went back to the kernel when freed and were faulted in again,
    zeroed, at their next use. Measured on 2 cores: a NATS publisher of 136 KiB frames used
    0.66-0.82 ms of CPU per MB, and 0.32-0.41 with these settings; `kubegate bench stream`'s
    proxied list, all processes together, 12.3-13.1 -> 9.7-11.0 ms per MB (three paired runs).
    The cost is up to `MALLOC_TRIM_THRESHOLD` of free heap held per process (edge RSS growth
    over 1 GB streamed stayed at 0.2-1.4 MB). True when applied (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    trim = mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    mmap = mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    return trim == 1 and mmap == 1


def use_uvloop() -> None:
    """Run every event loop of this process on uvloop (libuv), not asyncio's default loop.

    Every kubegate process spends its time moving bytes between sockets (TLS to kubectl and the
    API server, NATS frames in between); uvloop's transports and SSL cost less CPU per request
    and per MB. Measured with `kubegate bench latency` on 2 cores: added p50 1.48-1.54 ms ->
    1.39-1.42 ms. Idempotent; call once at process start, before any loop is created.
    """
    import asyncio

    import uvloop

    if not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy):
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
