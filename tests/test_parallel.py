"""The process pool and the spare-core helper thread of index.parallel."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from audioid.index import parallel
from audioid.index.parallel import on_spare_core, ordered_map, usable_cores

two_cores = pytest.mark.skipif(usable_cores() < 2, reason="needs two cores")


@pytest.fixture(autouse=True)
def fresh_helper(monkeypatch):
    """A helper as a new process has it: in-process server tests ran single_thread_pools() in this one."""
    monkeypatch.setattr(parallel, "_spare", parallel._Spare())


def _square(x: int) -> int:
    return x * x


def test_ordered_map_keeps_input_order():
    assert list(ordered_map(_square, list(range(7)), jobs=2)) == [x * x for x in range(7)]


@two_cores
def test_spare_core_runs_on_the_helper_and_returns_the_result():
    caller = threading.get_ident()
    with on_spare_core(lambda a, b: (threading.get_ident(), a + b), 2, 3) as get:
        helper, total = get()
    assert total == 5 and helper != caller


@two_cores
def test_a_core_is_spared_only_to_a_query_running_alone():
    inside, leave = threading.Event(), threading.Event()
    seen = {}

    def other_query():
        with on_spare_core(threading.get_ident) as get:
            seen["other"] = get() != threading.get_ident()
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=other_query)
    t.start()
    assert inside.wait(10)
    with on_spare_core(threading.get_ident) as get:     # another query is running: no helper
        assert get() == threading.get_ident()
    leave.set()
    t.join(10)
    assert seen["other"]                                 # the first query, alone, had it
    with on_spare_core(threading.get_ident) as get:     # alone again
        assert get() != threading.get_ident()


def test_errors_reach_the_caller_and_the_block_waits_for_the_helper():
    done = threading.Event()

    def fail():
        raise KeyError("boom")

    def slow():
        time.sleep(0.05)
        done.set()

    with on_spare_core(fail) as get:
        with pytest.raises(KeyError, match="boom"):
            get()
    with pytest.raises(ValueError):
        with on_spare_core(slow):
            raise ValueError("the query failed")
    assert done.is_set()                                 # the helper's work ended with the block
    with on_spare_core(lambda: 1) as get:
        assert get() == 1


@two_cores
def test_processes_that_share_the_cores_lend_no_spare_core():
    """... except a server's, to a request running alone in the whole server (in_flight counts them)."""
    # In a child process: single_thread_pools() changes its whole process for good.
    code = ("import threading\n"
            "from audioid.index.parallel import lend_spare_core_when_alone, on_spare_core, single_thread_pools\n"
            "def helped():\n"
            "    with on_spare_core(threading.get_ident) as get: return get() != threading.get_ident()\n"
            "assert helped()\n"
            "single_thread_pools()\n"
            "assert not helped()\n"
            "in_flight = [2]\n"
            "lend_spare_core_when_alone(lambda: in_flight[0])\n"
            "assert not helped()\n"
            "in_flight[0] = 1\n"
            "assert helped()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# Prepended to the code of the fresh processes below: the pool sizes a thread sees, by threadpoolctl API.
_POOLS = ("import threading\n"
          "import faiss, numpy\n"
          "from threadpoolctl import threadpool_info\n"
          "def threads(api): return {i['num_threads'] for i in threadpool_info() if i['user_api'] == api}\n")


def _in_fresh_process(code: str) -> None:
    """Run ``code`` in a new interpreter whose thread pools have their default sizes."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    subprocess.run([sys.executable, "-c", _POOLS + code], check=True, timeout=120, env=env)


@two_cores
def test_a_helped_query_runs_on_single_threaded_pools():
    """BLAS or OpenMP threads on top of the two busy halves of a query only contend for the cores."""
    _in_fresh_process(
        "from audioid.index.parallel import on_spare_core\n"
        "assert threads('blas') != {1} and threads('openmp') != {1}\n"
        "with on_spare_core(lambda: (threads('blas'), threads('openmp'))) as get: blas, omp = get()\n"
        "assert blas == {1} and omp == {1}, (blas, omp)\n"
        "assert threads('blas') == {1}          # for good: limiting per query costs what it saves\n")


@two_cores
def test_server_request_threads_run_openmp_on_one_thread():
    """OpenMP's limit is per thread, so a thread started after single_thread_pools() (a server's request thread)
    takes it up at its first vector search: a one-vector FAISS search there otherwise leaves an OpenMP thread
    spinning."""
    _in_fresh_process(
        "from audioid.index.parallel import single_thread_pools\n"
        "from audioid.index.vectors import VectorSegment, build_faiss\n"
        "seg = VectorSegment('x', build_faiss(numpy.eye(8, dtype='float32'), numpy.arange(8), 'Flat'))\n"
        "def in_thread(fn):\n"
        "    out = []\n"
        "    t = threading.Thread(target=lambda: out.append(fn())); t.start(); t.join()\n"
        "    return out[0]\n"
        "def search():\n"
        "    before = threads('openmp')\n"
        "    seg.search(numpy.eye(8, dtype='float32')[:1], 3)\n"
        "    return before, threads('openmp')\n"
        "before, after = in_thread(search)\n"
        "assert before != {1} and after != {1}, (before, after)   # a process that did not ask: untouched\n"
        "single_thread_pools()\n"
        "assert threads('openmp') == {1}\n"
        "before, after = in_thread(search)\n"
        "assert before != {1} and after == {1}, (before, after)   # a later thread: limited at its search\n")


_CTRL_C_DURING_SHUTDOWN = """
import os, signal, threading, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from audioid.index.parallel import shut_down

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)   # as from a terminal, whoever started the tests
    pool = ProcessPoolExecutor(2, mp_context=get_context("forkserver"))
    running = [pool.submit(time.sleep, 1.0) for _ in range(2)]
    waiting = [pool.submit(time.sleep, 1.0) for _ in range(4)]
    time.sleep(0.5)                     # both workers busy
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()    # Ctrl-C again, mid-shutdown
    shut_down(pool)
    assert all(f.done() and not f.cancelled() for f in running)
    assert all(f.done() for f in waiting) and any(f.cancelled() for f in waiting)
    print("stopped", flush=True)
    time.sleep(0.5)
    signal.raise_signal(signal.SIGINT)  # and Ctrl-C works again afterwards
"""


def test_shut_down_finishes_through_a_second_ctrl_c(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_DURING_SHUTDOWN)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.stdout == "stopped\n", proc.stderr
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
