"""Work over processes, results in input order: the one pool that builds, adds and chunking share; the one way
a process that already runs in parallel with others keeps its numeric libraries single-threaded; and one helper
thread that lets a single query use a second core when it is free."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def single_thread_pools() -> None:
    """Limit this process' BLAS and OpenMP (FAISS) pools to one thread.

    For workers and servers whose processes or threads already fill the cores: pools of their own only spin
    waiting for one another (they doubled a server identify's CPU, bench/RESULTS.md).
    """
    import faiss  # noqa: F401  (loads the OpenMP runtime: the limit reaches only libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def ordered_map(fn: Callable[[T], R], items: Sequence[T], jobs: int | None = None) -> Iterator[R]:
    """``fn`` over ``items`` on ``jobs`` processes (default: one per core), yielded in input order.

    One job, or one item, runs in this process.  Workers come from a fork server, not a fork of this process:
    FAISS' OpenMP threads (a search or an IVF training done earlier here) do not survive fork, and a forked
    worker using them hangs.  Closing the generator early cancels the work not yet started.
    """
    jobs = min(jobs or os.cpu_count() or 1, max(len(items), 1))
    if jobs == 1:
        yield from map(fn, items)
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("forkserver"),
                               initializer=single_thread_pools)
    try:
        yield from pool.map(fn, items, chunksize=1)
    finally:
        pool.shutdown(cancel_futures=True)


class _Spare:
    """One helper thread per process, taken only when idle (so concurrent queries never queue behind each other)."""

    def __init__(self) -> None:
        self.free = threading.Semaphore(1)
        self.pool: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()

    def executor(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audioid-spare")
            return self.pool


_spare = _Spare()
# A forked child has the parent's objects but not its threads: it starts with a helper of its own.
os.register_at_fork(after_in_child=lambda: globals().__setitem__("_spare", _Spare()))


def on_spare_core(fn: Callable[..., R], *args) -> Callable[[], R]:
    """Start ``fn(*args)`` on the helper thread if it is idle and there is a second core; returns a function that
    gives its result (waiting for it, or running ``fn`` right then when the helper was busy or absent).

    For independent halves of one query: NumPy, SciPy and FAISS release the GIL in their kernels, so the two
    halves overlap.  Under load every core is busy anyway and the call costs what running it inline does.
    """
    spare = _spare
    if len(os.sched_getaffinity(0)) < 2 or not spare.free.acquire(blocking=False):
        return lambda: fn(*args)

    def run():
        try:
            return fn(*args)
        finally:
            spare.free.release()

    try:
        future: Future = spare.executor().submit(run)
    except RuntimeError:  # interpreter shutting down
        spare.free.release()
        return lambda: fn(*args)
    return future.result
