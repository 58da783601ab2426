"""A steady heap for our long-running processes (the CLI, its workers, the server): glibc allocator settings,
and free memory given back now and then.

glibc adapts its thresholds as a process runs: each time a large block is freed it raises the size above which
blocks are mapped on their own, and the free memory it keeps before trimming the heap.  Until they settle, the
large temporary arrays of each identify (decoded audio, spectrograms, hits) are mapped and unmapped, or trimmed
and faulted back in, on every request (about 2,400 page faults and +3 ms per identify in some processes, none in
others, depending on the order of earlier allocations); and each request thread gets an arena of its own that
keeps what it freed, so the RSS of the soak (``bench/soak.py``) wandered between 145 and 180 MB from one minute to
the next with no leak behind it.  Fixed thresholds (blocks up to 16 MB come from the heap; up to 64 MB of free heap
is kept), two arenas, and ``malloc_trim`` every few seconds make both steady.  Elsewhere than glibc this does nothing.

A batch pays the same faults per file: ``audioid identify`` over 100 files took 2.06-2.07 s of CPU and 147,000
page faults with glibc's own thresholds, 1.93-1.96 s and 27,000 with these (bench/RESULTS.md).  The CLI sets
them for its own process and our worker processes for themselves; a program that merely imports the library keeps
its allocator as it is.
"""
from __future__ import annotations

import ctypes
import threading
import time

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8

_configured = threading.Lock()
_done = False


def _trim_forever(trim, interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        trim(0)


def steady_heap(trim_interval_s: float = 10.0) -> bool:
    """Fix glibc's allocator thresholds and start a daemon thread trimming the heap every ``trim_interval_s``
    seconds; once per process.  Returns whether glibc's allocator was found and set."""
    global _done
    with _configured:
        if not _done:
            try:
                libc = ctypes.CDLL(None)
                mallopt, trim = libc.mallopt, libc.malloc_trim
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            for param, value in ((_M_MMAP_THRESHOLD, 16 << 20), (_M_TRIM_THRESHOLD, 64 << 20), (_M_ARENA_MAX, 2)):
                mallopt(param, value)
            threading.Thread(target=_trim_forever, args=(trim, trim_interval_s), name="heap-trimmer",
                             daemon=True).start()
            _done = True
    return True
