"""The HTTP API over real HTTP: waitress on an ephemeral loopback port, real indexes on disk, synthetic audio."""
from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests
import soundfile as sf

from audioid import synth
from audioid.api import create_app, make_server
from audioid.index.heap import steady_heap
from audioid.index.identify import MatchConfig
from audioid.index.identify import Identifier
from audioid.index.parallel import usable_cores
from audioid.index.result import FIELDS
from audioid.index.store import IndexReader, writer_lock

from conftest import Library, audioid_command, cpu_ticks, outro_recording, run_cli

PROBLEM_KEYS = {"type", "title", "status", "detail"}


@contextmanager
def serving(index: str | os.PathLike, running: list[int] | None = None, **config) -> Iterator[str]:
    """A real server for ``index`` on a free loopback port (counting its running requests in ``running``);
    yields its base URL."""
    app = create_app(index, **config)
    server = make_server(app, host="127.0.0.1", port=0, threads=4, running=running)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()
        # Closed from the server's own loop thread: closing its socket from here races the loop's select()
        # on it ("Bad file descriptor" in that thread).
        closed = threading.Event()
        try:
            server.trigger.pull_trigger(lambda: (server.close(), closed.set()))
        except OSError:
            # pull_trigger queues the thunk before it writes to the trigger's pipe; a loop already awake (a
            # request just finished) can run it in between, and the thunk closes that pipe: the write then
            # fails with EBADF although the server is closing as asked.  The wait below still fails otherwise.
            pass
        assert closed.wait(10)
        assert os.listdir(app.extensions["audioid"]["upload_dir"]) == []    # every upload's file is gone


def index_copy(lib: Library, tmp_path: Path, name: str = "index") -> Path:
    dest = tmp_path / name
    shutil.copytree(lib.index, dest)
    return dest


def assert_problem(r: requests.Response, status: int, *secrets: str) -> dict:
    """``r`` is a problem document with ``status`` that leaks no trace and none of ``secrets`` (server paths)."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.json()
    assert PROBLEM_KEYS <= set(body) and body["status"] == status and body["detail"]
    assert "Traceback" not in r.text and "/tmp" not in r.text
    assert not any(s in r.text for s in secrets)
    return body


@pytest.fixture(scope="module")
def queries(library: Library, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Recordings: the outros of track2 (WAV) and track5 (MP3), speech only, and a text file."""
    d = tmp_path_factory.mktemp("queries")
    out = {"t2.wav": d / "t2.wav", "t5.mp3": d / "t5.mp3", "speech.wav": d / "speech.wav",
           "notes.txt": d / "notes.txt"}
    sf.write(out["t2.wav"], outro_recording(library, "track2"), library.sr)
    synth.write_mp3(out["t5.mp3"], outro_recording(library, "track5", talk_seed=1), library.sr)
    sf.write(out["speech.wav"], synth.speech_like(7, 12.0, library.sr), library.sr)
    out["notes.txt"].write_text("not audio at all\n")
    return out


@pytest.fixture(scope="module")
def api(library: Library, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A read-mostly server on a copy of the library index."""
    with serving(index_copy(library, tmp_path_factory.mktemp("api"))) as url:
        yield url


def upload(path: Path, name: str | None = None) -> tuple:
    return (name or path.name, path.read_bytes())


# ---------------------------------------------------------------------------------------------- identify ---

def test_identify_gives_the_cli_record(api: str, library: Library, queries: dict[str, Path]) -> None:
    r = requests.post(f"{api}/identify", files={"file": upload(queries["t2.wav"])})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    rec = r.json()
    assert list(rec) == ["filename", *[f for f in FIELDS if f != "path"]]
    ident = Identifier.open(library.index)
    try:
        expected = ident.identify_file(str(queries["t2.wav"])).to_dict()
    finally:
        ident.close()
    del expected["path"]
    assert rec == {"filename": "t2.wav", **expected}
    assert rec["status"] == "match" and rec["label"] == "track2" and len(rec["neighbours"]) == 3


def test_identify_raw_body_and_parameters(api: str, queries: dict[str, Path]) -> None:
    body = queries["t5.mp3"].read_bytes()
    r = requests.post(f"{api}/identify", data=body, headers={"Content-Type": "audio/mpeg"},
                      params={"filename": "../../etc/radio\x07.mp3", "top": 1, "outro_seconds": 0})
    rec = r.json()
    assert r.status_code == 200 and rec["label"] == "track5"
    assert rec["filename"] == "radio.mp3"                 # last component, control characters dropped
    assert len(rec["neighbours"]) == 1 and rec["query_start_s"] == 0.0
    # A chunked body (no Content-Length) is streamed the same way.
    r = requests.post(f"{api}/identify", data=iter([body[:5000], body[5000:]]),
                      headers={"Content-Type": "audio/mpeg"})
    assert r.status_code == 200 and r.json()["label"] == "track5" and r.json()["filename"] is None


def test_identify_batch_in_order(api: str, queries: dict[str, Path]) -> None:
    files = [("file", upload(queries[k])) for k in ("t5.mp3", "notes.txt", "speech.wav", "t2.wav")]
    r = requests.post(f"{api}/identify/batch", files=files)
    assert r.status_code == 200
    recs = r.json()["results"]
    assert [(x["filename"], x["status"], x["label"]) for x in recs] == [
        ("t5.mp3", "match", "track5"), ("notes.txt", "error", None), ("speech.wav", "no_match", None),
        ("t2.wav", "match", "track2")]
    assert recs[1]["error"].startswith("notes.txt: not an audio file")


def test_identify_errors(api: str, queries: dict[str, Path]) -> None:
    wav = upload(queries["t2.wav"])
    for params in ({"top": 0}, {"top": "many"}, {"outro_seconds": -1}, {"outro_seconds": "nan"},
                   {"outro_seconds": "1e9"}):
        body = assert_problem(requests.post(f"{api}/identify", params=params, files={"file": wav}), 400)
        assert next(iter(params)) in body["detail"]
    assert_problem(requests.post(f"{api}/identify", data=b"hello", headers={"Content-Type": "text/plain"}), 415)
    assert_problem(requests.post(f"{api}/identify", json={"file": "x"}), 415)
    assert_problem(requests.post(f"{api}/identify", data=b"", headers={"Content-Type": "audio/wav"}), 400)
    assert_problem(requests.post(f"{api}/identify", files={"other": wav}), 400)
    assert_problem(requests.post(f"{api}/identify", files=[("file", wav), ("file", wav)]), 400)
    body = assert_problem(requests.post(f"{api}/identify", files={"file": upload(queries["notes.txt"])}), 422)
    assert body["detail"] == "notes.txt: not an audio file (looks like text)"
    body = assert_problem(requests.post(f"{api}/identify", data=b"\x00\x01" * 3000,
                                        headers={"Content-Type": "audio/wav"}), 422)
    assert body["detail"].startswith("upload: ")
    assert_problem(requests.post(f"{api}/identify/batch", files=[("file", wav)] * 33), 400)
    assert_problem(requests.get(f"{api}/identify"), 405)
    assert_problem(requests.get(f"{api}/nowhere"), 404)


def test_upload_limit(library: Library, tmp_path: Path, queries: dict[str, Path]) -> None:
    big = queries["t2.wav"].read_bytes()                      # ~0.45 MB
    assert len(big) > 200_000
    with serving(index_copy(library, tmp_path), max_upload_mb=0.2) as url:
        body = assert_problem(requests.post(f"{url}/identify", files={"file": ("a.wav", big)}), 413)
        assert "0.2 MB" in body["detail"]
        assert_problem(requests.post(f"{url}/identify", data=big, headers={"Content-Type": "audio/wav"}), 413)
        assert_problem(requests.post(f"{url}/identify", data=iter([big[:100_000], big[100_000:]]),
                                     headers={"Content-Type": "audio/wav"}), 413)
        assert_problem(requests.post(f"{url}/tracks", files={"file": ("a.wav", big)}, data={"label": "x"}), 413)
        small = synth.music_track(3, 4.0, 8000)
        sf.write(tmp_path / "small.wav", small, 8000)
        r = requests.post(f"{url}/identify", files={"file": upload(tmp_path / "small.wav")})
        assert r.status_code == 200


# ------------------------------------------------------------------------------------------------ tracks ---

def test_track_listing(api: str, library: Library) -> None:
    page = requests.get(f"{api}/tracks", params={"limit": 3, "offset": 2}).json()
    assert page["total"] == len(library.tracks) and page["offset"] == 2 and page["limit"] == 3
    assert [t["label"] for t in page["tracks"]] == ["track3", "track4", "track5"]
    assert "source_path" not in page["tracks"][0] and page["tracks"][0]["content_hash"]
    page = requests.get(f"{api}/tracks", params={"label": "track7"}).json()
    assert page["total"] == 1 and page["tracks"][0]["track_id"] == 7
    assert requests.get(f"{api}/tracks", params={"class": "dialogue"}).json() == {
        "total": 0, "offset": 0, "limit": 100, "tracks": []}
    assert requests.get(f"{api}/tracks/4").json()["label"] == "track4"
    assert_problem(requests.get(f"{api}/tracks/999"), 404)
    assert_problem(requests.get(f"{api}/tracks/{2**70}"), 404)
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": ""}, {"class": "jazz"}, {"class": ""},
                   {"label": " "}):
        assert_problem(requests.get(f"{api}/tracks", params=params), 400)


def test_health_stats_openapi(api: str, library: Library) -> None:
    health = requests.get(f"{api}/health").json()
    assert health["status"] == "ok" and health["index_ready"] and health["generation"] >= 1
    stats = requests.get(f"{api}/stats").json()
    assert stats["index"]["tracks"] == len(library.tracks) and stats["index"]["vector_index"] == "SQfp16"
    assert stats["index"]["builtin_examples"] is True         # no labelled track: the built-in examples vote
    assert sum(stats["index"]["classes"].values()) == len(library.tracks)
    assert stats["server"]["token_required"] is False and str(library.index) not in json.dumps(stats)
    doc = requests.get(f"{api}/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert {(p, m) for p, ops in doc["paths"].items() for m in ops if m != "parameters"} == {
        ("/identify", "post"), ("/identify/batch", "post"), ("/tracks", "get"), ("/tracks", "post"),
        ("/tracks/{track_id}", "get"), ("/tracks/{track_id}", "patch"), ("/tracks/{track_id}", "delete"),
        ("/health", "get"), ("/stats", "get"), ("/openapi.json", "get")}


def test_an_upload_without_a_title_takes_its_tags(library: Library, tmp_path: Path) -> None:
    idx = index_copy(library, tmp_path)
    with sf.SoundFile(tmp_path / "tagged.flac", "w", library.sr, 1) as f:
        f.title, f.artist = "Tagged Song", "Tag Artist"
        f.write(synth.music_track(43, 20.0, library.sr))
    with serving(idx) as url:
        r = requests.post(f"{url}/tracks", files={"file": upload(tmp_path / "tagged.flac")}, data={"label": "tagged"})
        assert r.status_code == 201, r.text
        assert (r.json()["title"], r.json()["artist"]) == ("Tagged Song", "Tag Artist")
        r = requests.patch(f"{url}/tracks/{r.json()['track_id']}", json={"title": "Given Title"})
        assert (r.json()["title"], r.json()["artist"]) == ("Given Title", "Tag Artist")


def test_writes_add_relabel_remove(library: Library, tmp_path: Path, queries: dict[str, Path]) -> None:
    idx = index_copy(library, tmp_path)
    song = synth.music_track(41, 30.0, library.sr)
    sf.write(tmp_path / "new.wav", song, library.sr)
    sf.write(tmp_path / "outro.wav", song[-10 * library.sr:], library.sr)
    outro = {"file": upload(tmp_path / "outro.wav")}
    with serving(idx) as url:
        assert requests.post(f"{url}/identify", files=outro).json()["status"] == "no_match"
        r = requests.post(f"{url}/tracks", files={"file": upload(tmp_path / "new.wav", "New Song.wav")},
                          data={"label": "new-song", "title": "New Song", "class": "music", "who": "tester"})
        assert r.status_code == 201, r.text
        track = r.json()
        assert r.headers["Location"] == f"/tracks/{track['track_id']}"
        assert track["label"] == "new-song" and track["metadata"] == {"filename": "New Song.wav"}
        assert requests.post(f"{url}/identify", files=outro).json()["label"] == "new-song"
        body = assert_problem(requests.post(f"{url}/tracks", files={"file": upload(tmp_path / "new.wav")},
                                            data={"label": "again"}), 409, str(idx))
        assert body["track_id"] == track["track_id"]
        tid = track["track_id"]
        r = requests.patch(f"{url}/tracks/{tid}", json={"label": "renamed", "artist": "Someone", "who": "tester"})
        assert r.status_code == 200 and r.json()["label"] == "renamed" and r.json()["title"] == "New Song"
        assert requests.post(f"{url}/identify", files=outro).json()["label"] == "renamed"
        assert requests.delete(f"{url}/tracks/{tid}", params={"who": "tester"}).json()["label"] == "renamed"
        assert requests.post(f"{url}/identify", files=outro).json()["status"] == "no_match"
        assert_problem(requests.get(f"{url}/tracks/{tid}"), 404)
        assert_problem(requests.delete(f"{url}/tracks/{tid}"), 404)
        assert_problem(requests.patch(f"{url}/tracks/{tid}", json={"label": "x"}), 404)
        # Bad writes: each named, none reaches the index.
        gen = requests.get(f"{url}/health").json()["generation"]
        assert_problem(requests.post(f"{url}/tracks", files={"file": upload(tmp_path / "new.wav")}), 400)
        assert_problem(requests.post(f"{url}/tracks", files={"file": upload(queries["notes.txt"])},
                                     data={"label": "notes"}), 422)
        assert_problem(requests.post(f"{url}/tracks", files={"file": upload(tmp_path / "new.wav")},
                                     data={"label": "x", "class": "jazz"}), 400)
        assert_problem(requests.post(f"{url}/tracks", data={"label": "x"}), 415)
        for bad in ({}, {"who": "me"}, {"label": ""}, {"label": 3}, {"class": "jazz"}, {"class": None},
                    {"colour": "red"}, [1]):
            assert_problem(requests.patch(f"{url}/tracks/1", json=bad), 400)
        assert_problem(requests.patch(f"{url}/tracks/1", data="label=x",
                                      headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
        assert requests.get(f"{url}/health").json()["generation"] == gen
    log = IndexReader(str(idx)).catalog.log_entries()
    assert [(e["action"], e["who"]) for e in log[-3:]] == [("add", "tester"), ("relabel", "tester"),
                                                          ("remove", "tester")]


def test_token(library: Library, tmp_path: Path, queries: dict[str, Path]) -> None:
    idx = index_copy(library, tmp_path)
    good = {"Authorization": "Bearer s3cret"}
    with serving(idx, token="s3cret") as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = requests.patch(f"{url}/tracks/1", json={"title": "T"}, headers=headers)
            assert_problem(r, 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert_problem(requests.delete(f"{url}/tracks/1"), 401)
        assert requests.get(f"{url}/tracks/1").status_code == 200          # reads stay open
        assert requests.post(f"{url}/identify", files={"file": upload(queries["t2.wav"])}).status_code == 200
        assert requests.patch(f"{url}/tracks/1", json={"title": "T"}, headers=good).json()["title"] == "T"
    with serving(idx, token="s3cret", token_all=True) as url:
        assert_problem(requests.get(f"{url}/tracks"), 401)
        assert_problem(requests.post(f"{url}/identify", files={"file": upload(queries["t2.wav"])}), 401)
        assert requests.get(f"{url}/tracks", headers=good).status_code == 200
        assert requests.get(f"{url}/health").status_code == 200
        doc = requests.get(f"{url}/openapi.json").json()
        assert doc["paths"]["/tracks"]["get"]["security"] == [{"bearer": []}]


# ---------------------------------------------------------------------------- readiness, swaps, concurrency ---

def test_not_ready_until_built_then_hot_swapped(library: Library, tmp_path: Path, queries: dict[str, Path]
                                                ) -> None:
    idx = tmp_path / "later"
    idx.mkdir()
    with serving(idx) as url:
        body = assert_problem(requests.get(f"{url}/health"), 503, str(idx))
        assert "audioid index build" in body["detail"]
        assert_problem(requests.post(f"{url}/identify", files={"file": upload(queries["t2.wav"])}), 503)
        assert_problem(requests.post(f"{url}/tracks", files={"file": upload(queries["t2.wav"])},
                                     data={"label": "x"}), 503)
        # Another process builds the index: the running server serves it, then a rebuild replaces it.
        result = run_cli("index", "build", library.ref_path("track2"), "--index", idx, "--jobs", "1")
        assert result.returncode == 0, result.stderr
        assert requests.get(f"{url}/health").json()["generation"] == 1
        assert requests.post(f"{url}/identify", files={"file": upload(queries["t2.wav"])}).json()["label"] \
            == "track2"
        refs = tmp_path / "refs"
        refs.mkdir()
        shutil.copy(library.ref_path("track5"), refs / "track5.wav")
        result = run_cli("index", "build", refs, "--index", idx, "--jobs", "1")
        assert result.returncode == 0, result.stderr
        assert requests.get(f"{url}/health").json()["generation"] == 2
        recs = requests.post(f"{url}/identify/batch", files=[("file", upload(queries["t2.wav"])),
                                                             ("file", upload(queries["t5.mp3"]))]).json()
        assert [r["label"] for r in recs["results"]] == [None, "track5"]
        assert requests.get(f"{url}/stats").json()["server"]["reloads"] == 2


def test_write_waits_for_another_writer(library: Library, tmp_path: Path) -> None:
    idx = index_copy(library, tmp_path)
    with serving(idx, write_wait_s=0.3) as url, writer_lock(str(idx)):
        body = assert_problem(requests.patch(f"{url}/tracks/1", json={"title": "T"}), 409, str(idx))
        assert body["type"] == "urn:audioid:problem:index-busy"
    with serving(idx, write_wait_s=5) as url:
        lock = writer_lock(str(idx))
        lock.__enter__()
        threading.Timer(0.5, lock.__exit__, (None, None, None)).start()
        assert requests.patch(f"{url}/tracks/1", json={"title": "T"}).status_code == 200


def test_concurrent_identify_and_add(library: Library, tmp_path: Path, queries: dict[str, Path]) -> None:
    """Queries running while tracks are added see the index before or after each add, never half of it."""
    idx = index_copy(library, tmp_path)
    new = {}
    for i in range(3):
        song = synth.music_track(60 + i, 25.0, library.sr)
        sf.write(tmp_path / f"new{i}.wav", song, library.sr)
        sf.write(tmp_path / f"outro{i}.wav", song[-10 * library.sr:], library.sr)
        new[f"new{i}"] = (tmp_path / f"new{i}.wav").read_bytes()
    files = [("file", upload(queries["t2.wav"]))] + [("file", upload(tmp_path / f"outro{i}.wav")) for i in range(3)]
    with serving(idx) as url:
        stop = threading.Event()

        def query() -> list[tuple[str | None, ...]]:
            seen = []
            with requests.Session() as s:
                while not stop.is_set():
                    r = s.post(f"{url}/identify/batch", files=files)
                    assert r.status_code == 200, r.text
                    recs = r.json()["results"]
                    assert recs[0]["label"] == "track2"
                    seen.append(tuple(x["label"] for x in recs[1:]))
            return seen

        with ThreadPoolExecutor(4) as pool:
            readers = [pool.submit(query) for _ in range(3)]
            for label, data in new.items():
                r = requests.post(f"{url}/tracks", files={"file": (f"{label}.wav", data)}, data={"label": label})
                assert r.status_code == 201, r.text
            stop.set()
            seen = [v for f in readers for v in f.result()]
        final = requests.post(f"{url}/identify/batch", files=files[1:]).json()["results"]
    # Adds land in order, so every answer is a prefix of them: (None, None, None), ("new0", None, None), ...
    prefixes = {tuple(f"new{i}" if i < k else None for i in range(3)) for k in range(4)}
    assert len(seen) >= 3 and set(seen) <= prefixes
    assert [r["label"] for r in final] == ["new0", "new1", "new2"]


# ------------------------------------------------------------------------------- CLI and the contract ---

def _serve_line(library: Library, cores: set[int] | None = None) -> str:
    """``audioid serve``'s first line (on cores ``cores`` only, if given), after checking it answers."""
    proc = subprocess.Popen([*audioid_command(), "serve", "--index", str(library.index), "--port", "0"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores))
    try:
        line = proc.stderr.readline()
        assert line.startswith(f"serving {library.index} on http://127.0.0.1:"), line
        url = line.split(" on ")[1].split()[0]
        assert requests.get(f"{url}/health", timeout=60).json()["index_ready"] is True
        return line
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_serve_command(library: Library, tmp_path: Path) -> None:
    """By default one worker per core the process may use: a server limited to one core runs one."""
    assert run_cli("serve", "--index", library.index, "--token-all").returncode == 2
    cores = usable_cores()
    assert f"({cores} worker{'s' if cores > 1 else ''}; Ctrl-C stops)" in _serve_line(library)
    if hasattr(os, "sched_setaffinity") and cores > 1:
        assert "(1 worker; Ctrl-C stops)" in _serve_line(library, {min(os.sched_getaffinity(0))})


def test_search_configuration(api: str, library: Library, tmp_path: Path) -> None:
    """A server searches as its MatchConfig says: with no time compression searched, a time-compressed outro
    is not found; `audioid serve --max-tempo-change 0` hands that to every worker."""
    query = tmp_path / "tempo.wav"
    sf.write(query, outro_recording(library, "track4", tempo=1.04), library.sr)
    found = requests.post(f"{api}/identify", files={"file": upload(query)}).json()
    assert (found["status"], found["label"], found["pitch"]) == ("match", "track4", 1.0)
    with serving(index_copy(library, tmp_path), match_config=MatchConfig(max_tempo_change=0)) as url:
        assert requests.post(f"{url}/identify", files={"file": upload(query)}).json()["status"] == "no_match"
    proc = subprocess.Popen([*audioid_command(), "serve", "--index", str(library.index), "--port", "0",
                             "--workers", "2", "--max-tempo-change", "0"], stderr=subprocess.PIPE, text=True)
    held: list[http.client.HTTPConnection] = []
    conns: dict[int, http.client.HTTPConnection] = {}
    try:
        url = proc.stderr.readline().split(" on ")[1].split()[0]

        def status(_: int) -> str:
            return requests.post(f"{url}/identify", files={"file": upload(query)}, timeout=60).json()["status"]

        with ThreadPoolExecutor(8) as pool:        # both workers up and busy
            assert set(pool.map(status, range(8))) == {"no_match"}
        time.sleep(0.5)                            # the workers see those connections closed
        # Kept-open connections are shared out over the workers, and each stays with its own: one per worker.
        host, port = url.split("//")[1].rsplit(":", 1)
        for _ in range(4):
            held.append(http.client.HTTPConnection(host, int(port), timeout=60))
            conns.setdefault(stats_pid(held[-1]), held[-1])
        assert len(conns) == 2
        for conn in conns.values():
            conn.request("POST", "/identify", body=query.read_bytes(), headers={"Content-Type": "audio/wav"})
            assert json.loads(conn.getresponse().read())["status"] == "no_match"
    finally:
        for conn in held:
            conn.close()
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    with pytest.raises(ValueError, match="unknown config"):
        create_app(library.index, max_tempo_change=0)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_heap_is_steadied_once_per_process() -> None:
    assert steady_heap() and steady_heap()
    assert [t.name for t in threading.enumerate()].count("heap-trimmer") == 1


def _workers(pid: int) -> set[int]:
    """Worker processes of the server ``pid`` (its multiprocessing children other than the resource tracker)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    found = set()
    for c in children:
        try:
            with open(f"/proc/{c}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.add(c)
        except FileNotFoundError:   # exited meanwhile
            pass
    return found


def stats_pid(conn: http.client.HTTPConnection) -> int:
    """The process that answers ``GET /stats`` on a kept-open connection (reopened if the server closed it)."""
    conn.request("GET", "/stats")
    return json.loads(conn.getresponse().read())["server"]["pid"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"), reason="needs Linux /proc")
def test_serve_workers(library: Library, tmp_path: Path, queries: dict[str, Path]) -> None:
    """--workers 2: two processes answer on one port, each sees the other's writes, a dead one is replaced (and
    what its upload folder held is removed), and SIGTERM stops them all and removes every upload folder."""
    idx = index_copy(library, tmp_path)
    song = synth.music_track(71, 25.0, library.sr)
    sf.write(tmp_path / "new.wav", song, library.sr)
    sf.write(tmp_path / "outro.wav", song[-10 * library.sr:], library.sr)
    temp = tmp_path / "temp"
    temp.mkdir()
    proc = subprocess.Popen([*audioid_command(), "serve", "--index", str(idx), "--port", "0", "--workers", "2",
                             "--threads", "2", "--token", "t0ken"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(temp)})
    upload_folders = lambda: {d.name: d for d in temp.glob("audioid-api-*/worker-*/audioid-api-*")}  # noqa: E731
    try:
        line = proc.stderr.readline()
        assert "(2 workers; Ctrl-C stops)" in line, line
        url = line.split(" on ")[1].split()[0]

        def identify(path: Path) -> dict:
            r = requests.post(f"{url}/identify", files={"file": upload(path)}, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()

        with ThreadPoolExecutor(8) as pool:
            assert {r["label"] for r in pool.map(identify, [queries["t2.wav"]] * 16)} == {"track2"}
        first = _workers(proc.pid)
        assert len(first) == 2
        # Kept-open connections are shared out evenly (the kernel alone often gives one worker three of four).
        host, port = url.split("//")[1].rsplit(":", 1)
        time.sleep(0.5)                                 # the workers see the pool's connections closed
        held = [http.client.HTTPConnection(host, int(port), timeout=60) for _ in range(4)]
        owners = [stats_pid(c) for c in held]
        assert sorted(Counter(owners).values()) == [2, 2] and set(owners) == first, owners
        for c in held:
            c.close()
        r = requests.post(f"{url}/tracks", files={"file": upload(tmp_path / "new.wav")}, data={"label": "new"},
                          headers={"Authorization": "Bearer t0ken"}, timeout=60)
        assert r.status_code == 201, r.text
        # Connections go to either worker: every one of these answers knows the new track.
        with ThreadPoolExecutor(8) as pool:
            assert {r["label"] for r in pool.map(identify, [tmp_path / "outro.wav"] * 16)} == {"new"}
        victim = min(first)
        before = upload_folders()
        assert len(before) == 2                          # one per worker, inside the parent's
        # A partial upload in each: the dead worker's goes with its folder, the live worker's stays.
        for d in before.values():
            (d / "upload-in-flight").write_bytes(b"part of someone's audio")
        os.kill(victim, signal.SIGKILL)
        # Connections made while the replacement starts all go to the survivor ...
        held = [http.client.HTTPConnection(host, int(port), timeout=60) for _ in range(4)]
        assert {stats_pid(c) for c in held} == first - {victim}
        for _ in range(600):
            now = _workers(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)
        assert len(now) == 2 and victim not in now      # replaced
        # ... which hands two of them over once the replacement runs: its answer says "Connection: close" and
        # the client's next request reconnects (to the replacement).
        deadline = time.monotonic() + 60                # the replacement may still be loading the index
        while time.monotonic() < deadline:
            owners = [stats_pid(c) for c in held]
            if sorted(Counter(owners).values()) == [2, 2]:
                break
            time.sleep(0.05)
        assert sorted(Counter(owners).values()) == [2, 2] and set(owners) == now, owners
        for c in held:
            c.close()
        assert identify(queries["t2.wav"])["label"] == "track2"
        kept = [d for name, d in upload_folders().items() if name in before]
        assert len(kept) == 1 and (kept[0] / "upload-in-flight").exists()     # only the dead worker's went
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    # 16 identifies from 8 clients on 2 x 2 threads queued some: waitress's queue-depth warnings stay out of the log.
    assert "Task queue depth" not in proc.stderr.read()
    assert not any(_alive(p) for p in now | first)
    assert list(temp.iterdir()) == []


def test_requests_are_counted_out_whatever_their_answer(library: Library, tmp_path: Path,
                                                       queries: dict[str, Path]) -> None:
    """The running-request count that decides whether a request gets the spare core drops back to 0 after
    answers, problems and failed uploads alike (a count left high would stop all lending)."""
    running = [0]
    with serving(index_copy(library, tmp_path), running=running) as url:
        assert requests.post(f"{url}/identify", files={"file": upload(queries["t5.mp3"])}).status_code == 200
        assert requests.post(f"{url}/identify", files={"file": upload(queries["notes.txt"])}).status_code == 422
        assert requests.post(f"{url}/identify", data=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
        assert requests.get(f"{url}/tracks/999999").status_code == 404
        assert running == [0]


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


@pytest.mark.skipif(usable_cores() < 2 or not os.path.exists("/proc/self/status"),
                    reason="needs two cores and Linux /proc")
def test_serve_workers_lend_the_second_core_to_a_lone_request(library: Library, tmp_path: Path,
                                                              queries: dict[str, Path]) -> None:
    """A request running alone in the whole server gets the spare core (its worker starts the helper thread);
    one that runs while another worker is busy does not, so the busy worker keeps its core."""
    from urllib3 import encode_multipart_formdata

    idx = index_copy(library, tmp_path)
    proc = subprocess.Popen([*audioid_command(), "serve", "--index", str(idx), "--port", "0", "--workers", "2",
                             "--threads", "1"], stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stderr.readline().split(" on ")[1].split()[0]
        host, port = url.split("//")[1].rsplit(":", 1)
        conns = [http.client.HTTPConnection(host, int(port), timeout=120) for _ in range(2)]
        deadline = time.monotonic() + 60
        while len({stats_pid(c) for c in conns}) < 2 and time.monotonic() < deadline:     # one on each worker
            for c in conns:
                c.close()
            time.sleep(0.1)
        busy, lone = (stats_pid(c) for c in conns)
        assert busy != lone

        def post(conn: http.client.HTTPConnection, path: str, files: int) -> dict:
            body, ctype = encode_multipart_formdata([("file", upload(queries["t2.wav"]))] * files)
            conn.request("POST", path, body, {"Content-Type": ctype})
            r = conn.getresponse()
            assert r.status == 200
            return json.loads(r.read())

        threads = _threads(busy)
        post(conns[0], "/identify", 1)                  # alone: helped
        assert _threads(busy) == threads + 1
        # A long batch on one worker; while it runs, a request on the other finds the server busy.
        threads, ticks = _threads(lone), cpu_ticks(busy)
        with ThreadPoolExecutor(1) as pool:
            batch = pool.submit(post, conns[0], "/identify/batch", 32)
            while cpu_ticks(busy) < ticks + 5 and not batch.done():                 # the batch is running
                time.sleep(0.005)
            assert post(conns[1], "/identify", 1)["label"] == "track2"
            assert not batch.done(), "the batch ended before the lone request: nothing tested"
            assert {r["label"] for r in batch.result()["results"]} == {"track2"}
        assert _threads(lone) == threads                # not helped
        post(conns[1], "/identify", 1)                  # alone again: helped
        assert _threads(lone) == threads + 1
        # A worker killed mid-request is replaced, and its count with it: lone requests are still helped.
        with ThreadPoolExecutor(1) as pool:
            batch = pool.submit(post, conns[0], "/identify/batch", 32)
            ticks = cpu_ticks(busy)
            while cpu_ticks(busy) < ticks + 5:
                time.sleep(0.005)
            os.kill(busy, signal.SIGKILL)
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                batch.result()
        deadline = time.monotonic() + 60
        while {busy, lone} & _workers(proc.pid) != {lone} or len(_workers(proc.pid)) < 2:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.1)
        (new,) = _workers(proc.pid) - {lone}
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        while stats_pid(conn) != new:                   # it holds fewer connections: it gets the next one
            assert time.monotonic() < deadline, "no connection reached the replacement"
            conn.close()
            time.sleep(0.1)
        threads = _threads(new)
        post(conn, "/identify", 1)
        assert _threads(new) == threads + 1
        for c in [*conns, conn]:
            c.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_openapi_contract_holds(library: Library, tmp_path: Path) -> None:
    """schemathesis sends generated requests (valid and invalid) and checks every response against the document.

    ``positive_data_acceptance`` is left out: the document can say "binary", not "decodable audio", so valid
    bytes that are no audio rightly get 422.
    """
    pytest.importorskip("schemathesis")
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    with serving(index_copy(library, tmp_path), token="t0ken") as url:
        result = subprocess.run(
            [st, "run", f"{url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "-H", "Authorization: Bearer t0ken", "--max-examples", "8", "--seed", "1", "--workers", "2",
             "--generation-database", "none", "--no-color", "--request-timeout", "30",
             "--suppress-health-check", "all"],
            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Server error" not in result.stdout
