"""Work over processes, results in input order: the one pool that builds, adds and chunking share; and the one way
a process that already runs in parallel with others keeps its numeric libraries single-threaded."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
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
