"""Work over processes, results in input order: the one pool that builds, adds and chunking share; the one way
a process that already runs in parallel with others keeps its numeric libraries single-threaded; and one helper
thread that lets a single query use a second core when it is free."""
from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the system keeps one (Linux: a container or
    ``taskset`` may allow fewer than the machine has), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # macOS, Windows
        return os.cpu_count() or 1


def single_thread_pools() -> None:
    """Limit this process' BLAS and OpenMP (FAISS) pools to one thread, and lend it no spare core.

    OpenMP's limit is per thread: threads started later (a server's request threads) take it up at their first
    FAISS search (:func:`openmp_as_the_process`).

    For workers and servers whose processes or threads already fill the cores: pools of their own only spin
    waiting for one another (they doubled a server identify's CPU, bench/RESULTS.md), and a query's helper
    thread (:func:`on_spare_core`) only adds GIL hand-overs (a sixth more CPU per request, same latency).  A
    server may lend it again to requests that run alone (:func:`lend_spare_core_when_alone`).
    """
    import faiss  # noqa: F401  (loads the OpenMP runtime: the limit reaches only libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    _openmp.limited = True
    _spare.enabled, _spare.shares_cores = False, True


def worker_setup() -> None:
    """What a process of ours that shares the cores with others does first (a worker of a batch, a server):
    one-thread pools (:func:`single_thread_pools`) and a steady heap (:func:`index.heap.steady_heap`)."""
    from .heap import steady_heap

    single_thread_pools()
    steady_heap()


def shut_down(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool``: cancel the work not started, wait for the running tasks, and for the workers to exit.

    A second Ctrl-C is ignored meanwhile.  Interrupting the shutdown left the pool's manager thread, and the
    interpreter's exit after it, waiting for workers that were never told to stop (a double Ctrl-C hung
    ``audioid identify`` with workers in 4 runs of 44, bench/RESULTS.md).
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:      # not the main thread, which alone receives signals
        previous = None
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def ordered_map(fn: Callable[[T], R], items: Sequence[T], jobs: int | None = None) -> Iterator[R]:
    """``fn`` over ``items`` on ``jobs`` processes (default: one per core), yielded in input order.

    One job, or one item, runs in this process.  Workers come from a fork server, not a fork of this process:
    FAISS' OpenMP threads (a search or an IVF training done earlier here) do not survive fork, and a forked
    worker using them hangs.  Closing the generator early cancels the work not yet started.
    """
    jobs = min(jobs or usable_cores(), max(len(items), 1))
    if jobs == 1:
        yield from map(fn, items)
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("forkserver"),
                               initializer=worker_setup)
    try:
        yield from pool.map(fn, items, chunksize=1)
    finally:
        shut_down(pool)


_openmp = threading.local()


def one_openmp_thread() -> None:
    """Run OpenMP (FAISS) on one thread in the calling thread (once per thread; later calls cost nothing)."""
    if getattr(_openmp, "limited", False):
        return
    import faiss  # noqa: F401  (loads the OpenMP runtime: the limit reaches only libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")
    _openmp.limited = True


class _Spare:
    """One helper thread per process, lent to a query only while no other query runs in this process: under
    concurrent load every core is busy anyway, and lending it then only adds threads contending for the cores.

    While the two halves of a query fill two cores, BLAS and OpenMP pools on top of them only contend: with
    them a helped 10 s identify took 21 ms instead of 17 (bench/RESULTS.md).  So the first lend limits this
    process' BLAS pools to one thread, for good (they are process-wide, and limiting them per query costs as much
    as it saves: OpenBLAS restarts its threads each time), and the helper thread runs OpenMP (FAISS) on one.
    """

    def __init__(self, enabled: bool = True, shares_cores: bool = False) -> None:
        self.enabled = enabled
        self.shares_cores = shares_cores      # single_thread_pools() ran: other threads or processes fill the cores
        self.in_flight: Callable[[], int] | None = None   # a server's requests running, in all its processes
        self.lock = threading.Lock()
        self.running = 0          # queries inside on_spare_core, helped or not
        self.pool: ThreadPoolExecutor | None = None

    def free(self, running: int = 0) -> bool:
        """Whether the core is to lend while ``running`` queries (the asking one included) are inside, and, in a
        server, no request but the asking one runs anywhere in it."""
        return (self.enabled and self.running == running and usable_cores() >= 2
                and (self.in_flight is None or self.in_flight() <= 1))

    def lend(self) -> ThreadPoolExecutor | None:
        with self.lock:
            self.running += 1
            if not self.free(running=1):
                return None
            if self.pool is None:
                from threadpoolctl import threadpool_limits

                threadpool_limits(limits=1, user_api="blas")
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audioid-spare",
                                               initializer=one_openmp_thread)
            return self.pool

    def done(self) -> None:
        with self.lock:
            self.running -= 1


_spare = _Spare()
# A forked child has the parent's objects but not its threads: it starts with a helper of its own.  It is not
# the server whose requests in_flight counts, so it lends nothing if that was a server.
os.register_at_fork(after_in_child=lambda: globals().__setitem__(
    "_spare", _Spare(_spare.enabled and _spare.in_flight is None, _spare.shares_cores)))


def lend_spare_core_when_alone(in_flight: Callable[[], int]) -> None:
    """Lend the spare core again, in a server set up by :func:`single_thread_pools`, to a request that runs
    alone: while ``in_flight()``, the number of requests running in the whole server (all its processes, the
    asking one included), is 1.

    A pipeline that sends one file at a time then gets each query's two halves on two cores (a fifth less
    latency, for more CPU: bench/RESULTS.md); under concurrent requests nothing is lent, and the cores serve
    the requests.
    """
    _spare.in_flight = in_flight
    _spare.enabled = True


def openmp_as_the_process() -> None:
    """Call before an OpenMP (FAISS) call: in a process :func:`single_thread_pools` set up, the calling thread
    runs OpenMP on one thread too.

    OpenMP's thread count is per thread, and threads started after the limit (a server's request threads) do
    not inherit it: each would start an OpenMP team of its own for a one-vector search, whose idle member then
    spins on a core (about 10 ms of CPU per request in a one-thread server, bench/RESULTS.md).
    """
    if _spare.shares_cores:
        one_openmp_thread()


def spare_core_free() -> bool:
    """Whether :func:`on_spare_core` would lend a core to a query starting now: for work that is worth
    splitting only on two cores (a hint; another query may start first, and then the split runs on one)."""
    return _spare.free()


@contextmanager
def on_spare_core(fn: Callable[..., R], *args) -> Iterator[Callable[[], R]]:
    """Within the block, ``fn(*args)`` runs on a second core if this process has one to spare; the block gets
    a function that returns its result (waiting for it, or running ``fn`` right then when no core was spared).

    For the independent halves of one query: NumPy, SciPy, soxr and FAISS release the GIL in their kernels, so
    the two halves overlap.  A core is spared only to a query running alone in its process, and never in a
    process that :func:`single_thread_pools` set up to share the cores with others, unless it is a server's
    and the request runs alone in the server (:func:`lend_spare_core_when_alone`).
    """
    spare = _spare
    pool = spare.lend()
    future: Future | None = None
    try:
        if pool is not None:
            try:
                future = pool.submit(fn, *args)
            except RuntimeError:  # interpreter shutting down
                future = None
        yield future.result if future is not None else (lambda: fn(*args))
    finally:
        if future is not None:
            wait([future])        # the helper's work ends with the block, whatever happened in it
        spare.done()
