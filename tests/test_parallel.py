"""The process pool and the spare-core helper thread of index.parallel."""
from __future__ import annotations

import os
import threading

import pytest

from audioid.index.parallel import on_spare_core, ordered_map

two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")


def _square(x: int) -> int:
    return x * x


def test_ordered_map_keeps_input_order():
    assert list(ordered_map(_square, list(range(7)), jobs=2)) == [x * x for x in range(7)]


@two_cores
def test_spare_core_runs_on_the_helper_and_returns_the_result():
    caller = threading.get_ident()
    result = on_spare_core(lambda a, b: (threading.get_ident(), a + b), 2, 3)()
    assert result[1] == 5 and result[0] != caller


@two_cores
def test_busy_helper_means_inline_not_a_queue():
    started, release = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(10)
        return "held"

    first = on_spare_core(hold)
    assert started.wait(10)
    caller = threading.get_ident()
    second = on_spare_core(threading.get_ident)   # helper busy: deferred, then run by the caller
    assert second() == caller
    release.set()
    assert first() == "held"
    # The helper is free again once its work is done.
    assert on_spare_core(threading.get_ident)() != caller


def test_errors_reach_the_caller():
    def fail():
        raise KeyError("boom")

    get = on_spare_core(fail)
    with pytest.raises(KeyError, match="boom"):
        get()
    assert on_spare_core(lambda: 1)() == 1      # the helper was released despite the error
