#!/usr/bin/env python3
"""Fuzz run of the HTTP API: schemathesis generates requests from ``GET /openapi.json`` of a live
``audioid serve`` (valid and invalid, every operation, writes included) and checks each response against the
contract; counts the cases and the 5xx answers, then checks the index the fuzzed writes changed.

Usage::

    python bench/api_fuzz.py --work /tmp/audioid-api-fuzz [--max-examples 300] [--token t0ken]

The index holds ``--tracks`` synthetic songs (:func:`http_load.ensure_index`, built once); each run fuzzes a
fresh copy.  With ``--token`` the server guards its writes (``AUDIOID_TOKEN``) and schemathesis sends the token.
``positive_data_acceptance`` is left out as in ``tests/test_api.py``: "binary" in the contract cannot say
"decodable audio", so random bytes rightly get 422.  Exits 1 on any 5xx, failed check or inconsistent index.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_load import ensure_index, start_server  # noqa: E402

from audioid.index.check import check_index  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/audioid-api-fuzz", help="Folder for the index, logs and reports.")
    ap.add_argument("--tracks", type=int, default=30, help="Songs in the index.")
    ap.add_argument("--max-examples", type=int, default=300, help="schemathesis examples per operation.")
    ap.add_argument("--workers", type=int, default=2, help="schemathesis workers.")
    ap.add_argument("--seed", type=int, default=1, help="schemathesis seed.")
    ap.add_argument("--token", default=None, help="Bearer token the server requires for writes.")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="Processes for building.")
    args = ap.parse_args(argv)

    base = ensure_index(args.work, args.tracks, args.jobs)
    index = os.path.join(args.work, "fuzz-index")
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(base, index)
    if args.token:
        os.environ["AUDIOID_TOKEN"] = args.token          # start_server's subprocess inherits it
    proc, url = start_server(index, 4, os.path.join(args.work, "server.log"))
    junit = os.path.join(args.work, "junit.xml")
    st = shutil.which("st") or os.path.join(os.path.dirname(sys.executable), "st")
    cmd = [st, "run", f"{url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
           "--max-examples", str(args.max_examples), "--seed", str(args.seed), "--workers", str(args.workers),
           "--generation-database", "none", "--no-color", "--request-timeout", "60", "--suppress-health-check",
           "all", "--report", "junit", "--report-junit-path", junit]
    if args.token:
        cmd += ["-H", f"Authorization: Bearer {args.token}"]
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=args.work)
    finally:
        alive = proc.poll() is None
        proc.terminate()
        proc.wait(timeout=60)
    wall = time.perf_counter() - t0
    with open(os.path.join(args.work, "server.log")) as f:
        server_log = f.read()
    with open(os.path.join(args.work, "st.out"), "w") as f:
        f.write(run.stdout + run.stderr)

    summary = run.stdout.split("SUMMARY")[-1]
    cases = re.search(r"Test cases:\s*(.+)", summary)
    suites = ET.parse(junit).getroot().iter("testcase")
    failed_ops = [c.get("name") for c in suites if c.find("failure") is not None or c.find("error") is not None]
    # The app logs a traceback for every 500 it answers, waitress for every error escaping the app; the
    # not_a_server_error check names any other 5xx.
    five_xx = server_log.count("Traceback") + run.stdout.count("Server error")
    rep = check_index(index)
    print(f"schemathesis {run.args[0]} run, --max-examples {args.max_examples}, seed {args.seed}, "
          f"{args.workers} workers, token {'on' if args.token else 'off'}: {wall:.0f} s, exit {run.returncode}; "
          f"test cases: {cases.group(1).strip() if cases else '?'}; failed operations: {failed_ops or 'none'}; "
          f"5xx (server tracebacks + 'Server error' findings): {five_xx}; server "
          f"{'alive' if alive else 'DEAD'} at the end; index check ok={rep.ok} ({rep.tracks} tracks, "
          f"generation {rep.generation}, errors {rep.errors})")
    print(summary.strip())
    sys.exit(0 if run.returncode == 0 and five_xx == 0 and alive and rep.ok else 1)


if __name__ == "__main__":
    main()
