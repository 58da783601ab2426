"""ml-audio-id: tell which reference track plays at the end of a broadcast segment.

Two lines do what the CLI does::

    import audioid
    audioid.build_index("refs/", "idx")                  # folder (recursive), CSV manifest or one file
    results = audioid.identify("idx", ["a.mp3", "b/"])   # list of audioid.index.result.Result, input order

Everything heavy (numpy, the index, the decoders) is imported on first use, so ``import audioid`` and
``audioid --help`` stay fast.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

__version__ = "0.1.0"

__all__ = ["__version__", "build_index", "add_to_index", "identify", "iter_identify"]

if TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import ProcessPoolExecutor

    from .index.build import WriteReport
    from .index.identify import Identifier, MatchConfig
    from .index.result import Result


def build_index(source: str | os.PathLike, index: str | os.PathLike, *, label_from: str = "stem",
                klass: str | None = None, jobs: int | None = None, progress: Callable | None = None
                ) -> "WriteReport":
    """Build (or rebuild) the index at ``index`` from ``source``: a folder (recursive), a CSV manifest
    (``path,label[,title,artist,class,...]``) or one audio file.  ``klass`` (music, dialogue or both) is the
    class of every file that gets none from a manifest.  Unreadable files are skipped and listed in the returned
    report's ``failed``; see :func:`audioid.index.build.build_index`."""
    from .index.build import build_index as _build
    from .index.sources import reference_specs

    specs = reference_specs(os.fspath(source), label_from=label_from, klass=klass)
    return _build(specs, os.fspath(index), jobs=jobs, progress=progress)


def add_to_index(source: str | os.PathLike, index: str | os.PathLike, *, label_from: str = "stem",
                 klass: str | None = None, jobs: int | None = None, progress: Callable | None = None
                 ) -> "WriteReport":
    """Add the references of ``source`` to an existing index (duplicates of indexed files are skipped);
    ``klass`` as in :func:`build_index`."""
    from .index.build import add_to_index as _add
    from .index.sources import reference_specs

    specs = reference_specs(os.fspath(source), label_from=label_from, klass=klass)
    return _add(specs, os.fspath(index), jobs=jobs, progress=progress)


def identify(index: str | os.PathLike, paths: str | os.PathLike | Iterable[str | os.PathLike], *,
             outro_seconds: float | None = None, all_matches: bool = False, jobs: int | None = 1,
             config: "MatchConfig | None" = None) -> list["Result"]:
    """Identify files (folders are searched recursively) against ``index``; one Result per file in input order
    (with ``all_matches``, one per track found in each file).  See :func:`iter_identify`."""
    return [r for _, results in iter_identify(index, paths, outro_seconds=outro_seconds, all_matches=all_matches,
                                              jobs=jobs, config=config) for r in results]


def iter_identify(index: str | os.PathLike, paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                  outro_seconds: float | None = None, all_matches: bool = False, jobs: int | None = 1,
                  config: "MatchConfig | None" = None) -> Iterator[tuple[str, list["Result"]]]:
    """Yield ``(path, results)`` for every input file, in input order, as soon as that file is done.

    Parameters
    ----------
    index : path
        Index directory.
    paths : path or iterable of paths
        Files and folders; folders expand to the audio files under them (sorted, recursive).  Missing or bad
        files yield an ``error`` Result instead of stopping the batch.
    outro_seconds : float or None
        Seconds analysed at the end of each file; 0 analyses the whole file.  Default: 10, or the whole file with
        ``all_matches``.
    all_matches : bool
        Report every track found in the analysed audio (with its ``query_start_s``/``query_end_s``) rather than
        the one best match.
    jobs : int or None
        Worker processes; each opens the index itself.  Results still come back in input order.  ``None``:
        this process starts on the batch at once, and one worker per core joins when the rest of the batch
        would take longer than the workers take to start (so a few files cost no start-up, and a long batch
        runs on every core).
    config : audioid.index.identify.MatchConfig or None
        How queries are searched and decided (e.g. ``MatchConfig(max_tempo_change=0)`` searches no time
        compression); default ``MatchConfig()``.

    Raises
    ------
    audioid.index.store.IndexStoreError
        The index is missing, damaged or of another format version (raised before any file is analysed).
    """
    from .index.sources import expand_inputs

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = expand_inputs([os.fspath(p) for p in paths])
    if outro_seconds is None:
        outro_seconds = 0.0 if all_matches else 10.0
    index = os.fspath(index)
    if jobs is not None and jobs > 1 and len(files) > 1:
        jobs = min(jobs, len(files))
        yield from _identify_parallel(files, outro_seconds, all_matches, _worker_pool(index, jobs, config), jobs)
        return
    from .index.parallel import usable_cores

    yield from _identify_here(index, files, outro_seconds, all_matches, usable_cores() if jobs is None else 1,
                              config)


def _identify_here(index: str, files: list[str], outro_seconds: float, all_matches: bool, workers: int,
                   config: "MatchConfig | None") -> Iterator[tuple[str, list["Result"]]]:
    """Identify ``files`` in this process.  With ``workers`` > 1, that many worker processes start once the files
    left would take longer here than ``_WORKERS_PAY_OFF_S`` (timed on the files done after the first), and take
    over what is left as soon as one of them is ready: this process works on while they start."""
    from .index.identify import Identifier
    from .index.parallel import shut_down

    ident = Identifier.open(index, config)
    pool, ready, jobs, done, t1 = None, [], 1, 0, 0.0
    try:
        while done < len(files) and not any(r.done() and r.exception() is None for r in ready):
            yield files[done], _identify_one(ident, files[done], outro_seconds, all_matches)
            done += 1
            if done == 1:
                t1 = time.perf_counter()        # the time per file is taken after the first (a warm-up)
                continue
            left = len(files) - done
            per_file = (time.perf_counter() - t1) / (done - 1)
            if workers > 1 and pool is None and left * per_file > _WORKERS_PAY_OFF_S:
                jobs = min(workers, left)
                pool, ready = _starting_pool(index, jobs, config)
        if done < len(files):
            ident.close()           # the workers take over
            yield from _identify_parallel(files[done:], outro_seconds, all_matches, pool, jobs)
    finally:
        ident.close()
        if pool is not None:
            shut_down(pool)        # done already when the workers took over


def _identify_one(ident: "Identifier", path: str, outro_seconds: float, all_matches: bool) -> list["Result"]:
    from .index.result import Result

    try:
        if all_matches:
            return ident.identify_all(path, outro_seconds=outro_seconds)
        return [ident.identify_file(path, outro_seconds=outro_seconds)]
    except Exception as e:  # one file's unexpected failure must not end a batch: it becomes its error record
        return [Result(path=path, status="error", error=f"{path}: {type(e).__name__}: {e}")]


_worker_identifier: "Identifier | None" = None


def _worker_open(index: str, config: "MatchConfig | None") -> None:
    global _worker_identifier
    from .index.identify import Identifier
    from .index.parallel import worker_setup

    worker_setup()
    _worker_identifier = Identifier.open(index, config)


def _worker_identify(path: str, outro_seconds: float, all_matches: bool) -> list["Result"]:
    assert _worker_identifier is not None
    return _identify_one(_worker_identifier, path, outro_seconds, all_matches)


#: Workers start in about half a second to a second (imports, the index opened): a batch with less than this
#: left to do (measured on its first files) finishes as soon without them.
_WORKERS_PAY_OFF_S = 2.0


def _worker_pool(index: str, jobs: int, config: "MatchConfig | None") -> "ProcessPoolExecutor":
    """``jobs`` worker processes, each with the index open (started as work is submitted)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from .index.store import IndexReader

    IndexReader(index).close()  # a missing or foreign index fails here, clearly, not inside every worker
    # A fork server, not fork: FAISS' OpenMP threads do not survive fork (see index.build.analyse_all).
    return ProcessPoolExecutor(max_workers=jobs, initializer=_worker_open, initargs=(index, config),
                               mp_context=get_context("forkserver"))


def _starting_pool(index: str, jobs: int, config: "MatchConfig | None"
                   ) -> tuple["ProcessPoolExecutor | None", list]:
    """A pool of ``jobs`` workers, all starting, and a future per worker: one is done once a worker is ready.
    No pool where none can start (no fork server, no processes left): the batch goes on in this process."""
    try:
        pool = _worker_pool(index, jobs, config)
        # Each submission while no worker is idle starts one more worker, up to jobs.
        return pool, [pool.submit(os.getpid) for _ in range(jobs)]
    except Exception:
        return None, []


def _identify_parallel(files: list[str], outro_seconds: float, all_matches: bool, pool: "ProcessPoolExecutor",
                       jobs: int) -> Iterator[tuple[str, list["Result"]]]:
    """``files`` identified by the ``jobs`` workers of ``pool`` (shut down at the end), in input order."""
    from collections import deque

    from .index.parallel import shut_down
    from .index.result import Result

    pending: deque = deque()
    todo = iter(files)
    try:
        while True:
            # Keep a few files per worker in flight, so output streams and memory stays flat for long lists.
            while len(pending) < 4 * jobs:
                f = next(todo, None)
                if f is None:
                    break
                try:
                    job = pool.submit(_worker_identify, f, outro_seconds, all_matches)
                except Exception as e:  # the pool broke earlier: every later file gets the error
                    job = e
                pending.append((f, job))
            if not pending:
                return
            f, job = pending.popleft()
            try:
                if isinstance(job, Exception):
                    raise job
                yield f, job.result()
            except Exception as e:  # a worker died (killed, out of memory): report it on this file, go on
                yield f, [Result(path=f, status="error", error=f"{f}: worker failed ({type(e).__name__}: {e})")]
    finally:
        shut_down(pool)
