"""The index as a long-running process sees it: always the newest committed generation, swapped in between queries.

A server cannot reopen the index for every request (opening loads the vectors), nor keep one generation forever
(``audioid index build`` in another process, or the server's own writes, commit new ones).  :class:`LiveIndex`
keeps one opened generation and, per query, compares the MANIFEST's ``stat`` with the one it opened (about a
microsecond): a writer replaces the MANIFEST by rename, so a new generation always shows as a new inode.  Queries
already running keep the generation they started with (it is closed when the last of them is done); queries
starting while a new one is being opened wait for it.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from .classify import ClassifyConfig
from .identify import Identifier, MatchConfig
from .store import MANIFEST, IndexReader, IndexStoreError

#: How often to retry opening a MANIFEST whose files a newer writer removed in between (see ``_open``).
_OPEN_ATTEMPTS = 3


@dataclass(eq=False)
class _Generation:
    """One opened generation and how many queries use it."""

    identifier: Identifier
    stamp: tuple[int, int, int]
    users: int = 0
    retired: bool = False


class LiveIndex:
    """The newest generation of the index at ``path``, shared by concurrent queries (threads).

    Parameters
    ----------
    path : path
        Index directory.  It need not hold an index yet: :meth:`acquire` raises :class:`IndexStoreError` until
        a build commits one, then serves it.
    config, classify_config
        Passed to every :class:`Identifier` opened.

    Examples
    --------
    >>> live = LiveIndex("my-index")                  # doctest: +SKIP
    >>> with live.acquire() as ident:                 # doctest: +SKIP
    ...     ident.identify_file("segment.mp3")
    """

    def __init__(self, path: str | os.PathLike, config: MatchConfig | None = None,
                 classify_config: ClassifyConfig | None = None):
        self.path = os.fspath(path)
        self.config = config
        self.classify_config = classify_config
        self.reloads = 0
        self._manifest = os.path.join(self.path, MANIFEST)
        self._current: _Generation | None = None
        self._error: str | None = None          # why the newest MANIFEST could not be opened
        self._failed_stamp: tuple | None = None  # ... and which MANIFEST that was (not retried until it changes)
        self._lock = threading.Lock()           # guards _current and the users counts
        self._reopen = threading.Lock()         # one thread opens a new generation; the others go on meanwhile

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._manifest)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextmanager
    def acquire(self) -> Iterator[Identifier]:
        """The newest committed generation's :class:`Identifier`, kept open until the ``with`` block ends.

        Raises
        ------
        IndexStoreError
            No generation could be opened yet (no index built, or a damaged or foreign one).
        """
        gen = self._checkout()
        try:
            yield gen.identifier
        finally:
            with self._lock:
                gen.users -= 1
                close = gen.retired and gen.users == 0
            if close:
                gen.identifier.close()

    @property
    def generation(self) -> int | None:
        """The generation queries currently get (None before one is opened)."""
        cur = self._current
        return None if cur is None else cur.identifier.reader.generation

    def _checkout(self) -> _Generation:
        stamp = self._stamp()
        cur = self._current
        if cur is None or (stamp != cur.stamp and stamp != self._failed_stamp):
            # Wait while another thread opens the new generation rather than answer from the old one: a query
            # that starts after a write has committed (here or in another process) must see it.
            self.refresh()
        with self._lock:
            cur = self._current
            if cur is None:
                raise IndexStoreError(self._error or f"{self.path}: no index yet")
            cur.users += 1
            return cur

    def refresh(self) -> bool:
        """Open the newest generation if the MANIFEST changed since the current one was opened (one thread opens
        it; the others wait for it).  Returns whether a new generation was swapped in."""
        with self._reopen:
            stamp = self._stamp()
            cur = self._current
            if cur is not None and stamp == cur.stamp:
                return False
            try:
                ident = self._open()
            except IndexStoreError as e:
                # Keep serving the generation we have; a broken MANIFEST is retried when it changes again.
                self._error, self._failed_stamp = str(e), stamp
                return False
            new = _Generation(ident, stamp or (0, 0, 0))
            with self._lock:
                old, self._current = self._current, new
                self._error = self._failed_stamp = None
                close = old is not None and old.users == 0
                if old is not None:
                    old.retired = True
            if close:
                old.identifier.close()
            self.reloads += 1
            return True

    def _open(self) -> Identifier:
        # A MANIFEST read just before a newer writer's commit may name files that writer has since removed: the
        # newer MANIFEST is then in place, so trying again opens that one.
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                reader = IndexReader(self.path)
                break
            except IndexStoreError:
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise
        return Identifier(reader, self.config, self.classify_config)

    def close(self) -> None:
        """Close the current generation (once its queries are done); later queries open the index again."""
        with self._lock:
            cur, self._current = self._current, None
            close = cur is not None and cur.users == 0
            if cur is not None:
                cur.retired = True
        if close:
            cur.identifier.close()
