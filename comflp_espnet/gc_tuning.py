"""Importing torch and ESPnet without the garbage collector rescanning what they load.

Importing ``espnet2.bin.asr_inference`` creates about a million long-lived
objects (modules, functions, classes).  Python's cyclic garbage collector
rescans all of them at every full collection: several times during the import
itself, and again at interpreter exit.  Each job of a ``JOB=1:N`` array pays
that, 1.5-2 s per process on 2 CPU cores (bench/bench_job_startup.py).

``collector_paused()`` runs a block of imports with the collector off and then,
if the block imported modules, freezes every object alive (``gc.freeze``):
frozen objects are never scanned again, so neither later collections nor the
exit pay for them.  Objects made after the block are collected as usual.  A
block whose modules were imported already changes nothing.
"""

import contextlib
import gc
import sys
from typing import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with cyclic garbage collection off; if it imported modules, freeze
    what exists when it ends.

    Nested blocks are fine: the collector is switched back on only if it was on
    when the block began.
    """
    enabled = gc.isenabled()
    modules = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > modules:
            gc.freeze()
        if enabled:
            gc.enable()
