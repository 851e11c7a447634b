"""Process-wide runtime settings applied by the `kubegate` entry point."""

from __future__ import annotations

import gc

from ops import cli, runtime


def test_the_entry_point_applies_the_gc_thresholds() -> None:
    before = gc.get_threshold()
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
