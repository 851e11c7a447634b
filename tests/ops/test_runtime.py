"""Process-wide runtime settings applied by the `kubegate` entry point."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

import pytest
import uvloop

from ops import cli, runtime


def test_the_entry_point_applies_the_gc_thresholds() -> None:
    before = gc.get_threshold()
    policy = asyncio.get_event_loop_policy()
    try:
        gc.set_threshold(700, 10, 10)
        runtime.tune_gc()
        assert gc.get_threshold() == runtime.GC_THRESHOLDS
        gc.set_threshold(700, 10, 10)
        try:
            cli.main([])
        except SystemExit:
            pass
        assert gc.get_threshold() == runtime.GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
        asyncio.set_event_loop_policy(policy)


def test_kubegate_processes_run_their_loops_on_uvloop() -> None:
    probe = (
        "import asyncio, sys\n"
        "from ops import cli\n"
        "try:\n    cli.main([])\nexcept SystemExit:\n    pass\n"
        "async def kind():\n    return type(asyncio.get_running_loop()).__module__\n"
        "print(asyncio.run(kind()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1].startswith("uvloop")


def test_use_uvloop_is_idempotent() -> None:
    policy = asyncio.get_event_loop_policy()
    try:
        runtime.use_uvloop()
        first = asyncio.get_event_loop_policy()
        runtime.use_uvloop()
        assert asyncio.get_event_loop_policy() is first
        assert isinstance(first, uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(policy)


FAULTS_PROBE = """
import resource, sys
from ops import runtime
if sys.argv[1] == "tuned":
    assert runtime.tune_malloc()
for _ in range(5):
    held = [bytes(300_000) for _ in range(8)]
    del held
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    held = [bytes(300_000) for _ in range(8)]
    del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_stream_sized_buffers_are_reused_not_faulted_in_again() -> None:
    # 100 rounds of eight 300 kB buffers: with glibc's defaults, each buffer faults tens of its
    # 73 pages in again (~30 measured); tuned, the freed buffers are reused as they are.
    assert _page_faults("default") > 100 * 8 * 10
    assert _page_faults("tuned") < 100
