"""Hostile inputs (issue 6, part 1) through the real CLI: every file gets its expected record, nothing hangs.

The cases and what each must get come from :mod:`audioid.hostile`; an index of its references is built with
``audioid index build``.  Timeouts only guard against hangs; speed and memory are measured by
``bench/fuzz_inputs.py``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest

from audioid import hostile
from conftest import run_cli

GUARD_S = 180  # a hang guard, not a speed target


@pytest.fixture(scope="module")
def hostile_set(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    hostile.write_references(root / "refs", seed=0)
    proc = run_cli("index", "build", root / "refs", "--index", root / "idx", "--jobs", "1", timeout=GUARD_S)
    assert proc.returncode == 0, proc.stderr
    cases = hostile.make_hostile_set(root / "set", seed=0, long_seconds=3600)
    return {"root": root, "index": root / "idx", "folder": root / "set", "cases": cases}


def _records(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _check(case: hostile.Case, rec: dict) -> None:
    """The record is one the case allows; errors name the file and say what is wrong."""
    assert rec["status"] in hostile.EXPECT_STATUSES[case.expect], (case, rec)
    if case.expect == "match":
        assert rec["label"] == case.label, (case, rec)
    if rec["status"] == "error":
        assert rec["error"].startswith(case.path + ": "), (case, rec)
        # a message for people, not an unexpected exception's type and text
        assert not re.match(r"\w+(Error|Exception): ", rec["error"][len(case.path) + 2:]), (case, rec)
        if case.mentions:
            assert any(m.lower() in rec["error"].lower() for m in case.mentions), (case, rec)
    else:
        assert rec["error"] is None, (case, rec)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_identify_folder_of_hostile_files(hostile_set, jobs):
    cases = [c for c in hostile_set["cases"] if c.scanned and not c.skip]
    proc = run_cli("identify", "--index", hostile_set["index"], hostile_set["folder"], "--jobs", jobs,
                   timeout=GUARD_S)
    recs = _records(proc)
    by_path = {r["path"]: r for r in recs}
    # one record per scanned file, names (newlines, quotes, '$', non-UTF-8 bytes) written back as given
    assert len(by_path) == len(recs) and set(by_path) == {c.path for c in cases}
    for case in cases:
        _check(case, by_path[case.path])
    kinds = {c.kind for c in cases}
    assert {"truncated", "bitflip", "non-audio", "lying-wav", "nan-inf", "signal", "long", "multichannel",
            "names", "empty", "tiny"} <= kinds


def test_special_files_given_by_name_get_errors_without_blocking(hostile_set):
    special = [c for c in hostile_set["cases"] if not c.scanned and not c.skip]
    assert {c.name for c in special} >= {"symlink-loop", "dangling-symlink", "fifo"}
    good = next(c for c in hostile_set["cases"] if c.name == "good-wav")
    recs = _records(run_cli("identify", "--index", hostile_set["index"], *[c.path for c in special], good.path,
                            timeout=GUARD_S))
    assert [r["path"] for r in recs] == [c.path for c in special] + [good.path]
    for case, rec in zip(special + [good], recs):
        _check(case, rec)


def test_unreadable_file(hostile_set):
    [case] = [c for c in hostile_set["cases"] if c.name == "unreadable"]
    if case.skip:
        pytest.skip(case.skip)
    [rec] = _records(run_cli("identify", "--index", hostile_set["index"], case.path, timeout=GUARD_S))
    _check(case, rec)


def test_index_build_indexes_good_files_and_reports_each_bad_one(hostile_set, tmp_path):
    src = tmp_path / "src"
    refs = hostile.write_references(src / "good", seed=0)
    bad = [c for c in hostile_set["cases"] if c.expect == "error" and c.scanned and not c.skip]
    (src / "bad").mkdir()
    for case in bad:
        shutil.copyfile(case.path, src / "bad" / os.path.basename(case.path))
    bad = [dataclasses.replace(c, path=str(src / "bad" / os.path.basename(c.path))) for c in bad]
    # a FIFO, a symlink loop and a dangling link in the scanned folder are skipped, never read
    special: list[hostile.Case] = []
    hostile.cases_special(src / "bad", special, b"\x00\x00" * 16000)
    bad += [c for c in special if c.scanned and not c.skip]      # the unreadable file, unless we are root
    proc = run_cli("index", "build", src, "--index", tmp_path / "idx", "--jobs", "2", timeout=GUARD_S)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{len(refs)} added, 0 duplicate(s), {len(bad)} failed" in proc.stderr, proc.stderr
    failed = [line.strip()[len("failed"):].strip() for line in proc.stderr.splitlines()
              if line.strip().startswith("failed")]
    assert len(failed) == len(bad)
    for case in bad:
        [line] = [f for f in failed if f.startswith(case.path + ": ")]
        if case.mentions:
            assert any(m.lower() in line.lower() for m in case.mentions), (case, line)
    assert run_cli("index", "check", "--index", tmp_path / "idx", timeout=GUARD_S).returncode == 0
    good = next(c for c in hostile_set["cases"] if c.name == "truncated-flac-late")
    [rec] = _records(run_cli("identify", "--index", tmp_path / "idx", good.path, timeout=GUARD_S))
    assert (rec["status"], rec["label"]) == ("match", good.label)


def test_mutations_are_deterministic_and_damage():
    data = bytes(range(256)) * 64
    runs = [[hostile.mutate(data, np.random.default_rng([7, k])) for k in range(50)] for _ in range(2)]
    assert runs[0] == runs[1]
    assert sum(out != data for _, out in runs[0]) >= 45
    steps = {re.match(r"[a-z]+", step).group() for what, _ in runs[0] for step in what.split("+")}
    assert steps >= {"truncate", "flip", "rewrite", "drop", "insert", "overwrite"}
