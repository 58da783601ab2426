"""Several server processes on one listening socket (``audioid serve --workers N``).

Threads of one process take turns on the GIL, and an identify is mostly short numpy calls between Python
lines, so on two cores one process serves about 1.4 times what one thread does.  Worker processes run in
parallel: the parent binds the socket, starts ``N`` waitress servers that accept on it (the kernel hands each new
connection to one of them), and restarts a worker that dies.  Workers are fresh interpreters (``spawn``: FAISS
and OpenMP state must not be forked) and open the index themselves; their writes queue on the index's writer
lock as separate processes' do, and each one's :class:`~audioid.index.live.LiveIndex` picks up the others'
generations before its next query.  A worker whose parent is gone stops by itself.

Clients that keep their connections open (pipelines do) keep the worker that accepted them, and the kernel
hands a new connection to whichever worker wakes first, so four connections could land three on one worker and
one on the other: those three clients wait on one core while the other idles.  So each worker publishes how many
connections it holds (a shared array) and accepts new ones only while it holds no more than any other.  A worker
that holds two more than another (its peer was still starting, or was replaced, when the connections came)
answers one request with ``Connection: close``, so that client's next connection goes to the other.

Each worker also publishes how many requests it is running (a second shared array): a request that runs while
no other runs anywhere in the server gets the second core for the two halves of its query (``make_server``).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable

#: A worker that exits this soon after starting, this many times in a row, means it cannot start at all.
_QUICK_EXIT_S = 10.0
_QUICK_EXITS = 3
#: How long stopping workers get to finish their requests before they are killed.
_STOP_GRACE_S = 10.0
#: Connection count published for a worker that is not (yet, or any more) accepting: never the least.
_NOT_ACCEPTING = 2**31 - 1
#: Longest a worker goes without looking again whether it is its turn to accept (waitress's default is 1 s):
#: another worker's count can drop while this one has nothing else to wake it.
_ACCEPT_RECHECK_S = 0.1


def listen_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (0: any free port), for :func:`serve_workers`.

    It listens at once, so connections made before a worker is ready wait in the backlog instead of failing.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def balance_accepts(server: Any, loads: Any, slot: int) -> None:
    """Make the waitress ``server`` accept new connections only while it holds no more than any other worker,
    and hand one over (``Connection: close`` on a response) while it holds two more than another.

    ``loads`` is an array of connection counts shared by the workers, ``slot`` this one's place in it.  The
    count is published each turn of the server's loop, which also runs after each accept and close.
    """
    readable = server.readable

    def balanced() -> bool:
        loads[slot] = len(server.active_channels)
        return readable() and loads[slot] <= min(loads)

    class HandOverTask(server.channel_class.task_class):
        def execute(self) -> None:
            if loads[slot] > min(loads) + 1:
                self.set_close_on_finish()     # announced in the response, so the client reconnects cleanly
            super().execute()

    server.readable = balanced
    server.channel_class = type("BalancedChannel", (server.channel_class,), {"task_class": HandOverTask})
    server.adj.asyncore_loop_timeout = min(server.adj.asyncore_loop_timeout, _ACCEPT_RECHECK_S)


def _worker(sock: socket.socket, index_dir: str, config: dict[str, Any], threads: int, parent: int, loads: Any,
            in_flight: Any, slot: int) -> None:
    from .app import create_app, make_server

    # SIGTERM (from the parent) exits like Ctrl-C, so the upload folder and readers are cleaned up.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        server = make_server(create_app(index_dir, **config), sock=sock, threads=threads, running=in_flight,
                             slot=slot)
        balance_accepts(server, loads, slot)
        server.run()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        pass


def serve_workers(sock: socket.socket, index_dir: str, config: dict[str, Any], *, workers: int, threads: int,
                  log: Callable[[str], None] = print) -> int:
    """Serve the API for ``index_dir`` from ``workers`` processes accepting on ``sock``, until SIGTERM or
    Ctrl-C; returns an exit status (non-zero when workers kept dying at start-up).

    ``config`` is :func:`api.create_app`'s; each worker runs ``threads`` request threads.
    """
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    # Each worker makes its upload folder in one of ours, so that what a worker killed mid-upload leaves (the
    # partial upload of someone's audio) goes when it is replaced, and everything when we stop.
    root = tempfile.mkdtemp(prefix="audioid-api-", dir=config.get("upload_root"))

    def stop(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, stop)

    # Connections held per worker (see balance_accepts); start() marks a slot not accepting until its worker runs.
    loads = ctx.RawArray("l", workers)
    # Requests running per worker: a request running alone in the server gets the second core (make_server).
    in_flight = ctx.RawArray("l", workers)

    def start(slot: int) -> tuple[Any, float, str]:
        loads[slot], in_flight[slot] = _NOT_ACCEPTING, 0    # a worker that died mid-request counted one
        uploads = tempfile.mkdtemp(prefix="worker-", dir=root)
        proc = ctx.Process(target=_worker, args=(sock, index_dir, {**config, "upload_root": uploads}, threads,
                                                 os.getpid(), loads, in_flight, slot), name="audioid-worker",
                          daemon=False)
        proc.start()
        return proc, time.monotonic(), uploads

    running = [start(slot) for slot in range(workers)]
    quick_exits, status = 0, 0
    try:
        while not stopping:
            wait([p.sentinel for p, _, _ in running], timeout=0.5)
            for i, (proc, started, uploads) in enumerate(running):
                if proc.is_alive() or stopping:
                    continue
                quick_exits = quick_exits + 1 if time.monotonic() - started < _QUICK_EXIT_S else 0
                if quick_exits >= _QUICK_EXITS:
                    log(f"error: workers keep exiting at start-up (last exit status {proc.exitcode}); stopping")
                    status, stopping = 1, True
                    break
                log(f"worker {proc.pid} exited with status {proc.exitcode}; starting another")
                shutil.rmtree(uploads, ignore_errors=True)
                running[i] = start(i)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc, _, _ in running:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + _STOP_GRACE_S
        for proc, _, _ in running:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        sock.close()
        shutil.rmtree(root, ignore_errors=True)
    return status
