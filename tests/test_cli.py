"""The real ``audioid`` command line, run in subprocesses against synthetic audio (plus the Python facade)."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

import audioid
from audioid import synth
from audioid.index.identify import MatchConfig
from audioid.index.parallel import usable_cores
from audioid.index.result import FIELDS
from audioid.index.store import IndexReader

from conftest import SR, Library, audioid_command, cpu_ticks, outro_recording, run_cli


def _jsonl(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def queries(library: Library, tmp_path_factory) -> dict[str, str]:
    """Outro recordings of tracks 1-3 (one in a nested folder), an unknown song, and speech alone."""
    qdir = tmp_path_factory.mktemp("queries")
    (qdir / "b" / "deeper").mkdir(parents=True)
    out = {}
    for name, label in (("a1.wav", "track1"), ("b/b2.wav", "track2"), ("b/deeper/c3.flac", "track3")):
        sf.write(qdir / name, outro_recording(library, label), SR)
        out[label] = str(qdir / name)
    sf.write(qdir / "b" / "unknown.wav", synth.music_track(777, 12.0, SR), SR)
    sf.write(qdir / "speech.wav", synth.speech_like(3, 12.0, SR), SR)
    (qdir / "notes.txt").write_text("not audio, and not an audio extension: folder expansion skips it\n")
    out["unknown"], out["speech"], out["dir"] = str(qdir / "b" / "unknown.wav"), str(qdir / "speech.wav"), str(qdir)
    return out


# ------------------------------------------------------------------------------------------- start-up, help ---

def test_help_lists_commands_and_imports_nothing_heavy():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("demo", "identify", "index"):
        assert cmd in proc.stdout
    # What `audioid --help` imports: no numeric library, no index code (they cost seconds on a cold start).
    probe = ("import sys, audioid.cli.main; heavy = {'numpy', 'scipy', 'soundfile', 'soxr', 'librosa', 'faiss', "
             "'tqdm', 'audioid.index', 'audioid.fingerprint', 'audioid.synth'}; "
             "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert run_cli("index", "--help").returncode == 0


def test_cli_classes_are_the_index_classes():
    from audioid.cli import main
    from audioid.index.catalog import CLASSES

    assert main.CLASSES == CLASSES


# ------------------------------------------------------------------------------------------------- index ---

def test_build_from_folder_and_stats(library, tmp_path):
    idx = tmp_path / "idx"
    proc = run_cli("index", "build", library.refs, "--index", idx, "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    assert "8 added, 0 duplicate(s), 0 failed" in proc.stderr
    assert proc.stdout == ""                         # the summary goes to stderr, no progress bar on a pipe
    stats = json.loads(run_cli("index", "stats", "--index", idx, "--json").stdout)
    total_s = sum(library.duration(lab) for lab in library.tracks)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(idx) for f in fs)
    assert stats["tracks"] == 8 and stats["hashes"] > 1000 and stats["segments"] == 1
    assert stats["classes"] == {"music": 0, "dialogue": 0, "both": 0, "unlabelled": 8}
    assert stats["generation"] == 1 and stats["format_version"] == 2
    assert stats["vectors"] >= 8 * 5 and stats["vector_index"] == "SQfp16"     # 10 s windows every 5 s
    assert stats["hours"] == pytest.approx(total_s / 3600, abs=1e-3)
    assert stats["size_bytes"] == size
    text = run_cli("index", "stats", "--index", idx)
    assert text.returncode == 0
    assert "tracks" in text.stdout and "hours of audio" in text.stdout and "size on disk" in text.stdout


def test_build_from_manifest_keeps_title_artist_class_and_extra_columns(library, queries, tmp_path):
    manifest = tmp_path / "refs.csv"
    rel = os.path.relpath(library.refs, tmp_path)
    manifest.write_text("path,label,title,artist,class,isrc\n"
                        f"{rel}/track1.wav,first,Track One,Synth Band,music,XX-001\n"
                        f"{rel}/track2.wav,second,Track Two,,both,\n")
    proc = run_cli("index", "build", manifest, "--index", tmp_path / "idx")
    assert proc.returncode == 0, proc.stderr
    reader = IndexReader(str(tmp_path / "idx"))
    tracks = {t.label: t for t in reader.catalog.tracks()}
    reader.close()
    assert set(tracks) == {"first", "second"}
    assert (tracks["first"].title, tracks["first"].artist, tracks["first"].klass) == ("Track One", "Synth Band", "music")
    assert tracks["first"].metadata == {"isrc": "XX-001"}
    assert tracks["second"].artist is None and tracks["second"].metadata == {}
    [rec] = _jsonl(run_cli("identify", "--index", tmp_path / "idx", queries["track1"]))
    assert (rec["label"], rec["title"], rec["artist"]) == ("first", "Track One", "Synth Band")


def test_duplicates_and_add(library, tmp_path):
    refs = tmp_path / "refs"
    shutil.copytree(library.refs, refs, ignore=shutil.ignore_patterns("track8.wav"))
    (refs / "copies").mkdir()
    shutil.copy(refs / "track1.wav", refs / "copies" / "same-as-1.wav")
    idx = tmp_path / "idx"
    proc = run_cli("index", "build", refs, "--index", idx)
    assert proc.returncode == 0, proc.stderr
    assert "7 added, 1 duplicate(s)" in proc.stderr
    assert "track1.wav (same file as track 1)" in proc.stderr   # copies/same-as-1.wav sorts first

    again = run_cli("index", "add", refs, "--index", idx)
    assert again.returncode == 0 and "0 added, 8 duplicate(s)" in again.stderr
    assert json.loads(run_cli("index", "stats", "--index", idx, "--json").stdout)["generation"] == 1

    add = run_cli("index", "add", library.ref_path("track8"), "--index", idx)
    assert add.returncode == 0 and "1 added" in add.stderr
    stats = json.loads(run_cli("index", "stats", "--index", idx, "--json").stdout)
    assert (stats["tracks"], stats["segments"], stats["generation"]) == (8, 2, 2)
    probe = tmp_path / "probe.wav"
    sf.write(probe, outro_recording(library, "track8"), SR)
    [rec] = _jsonl(run_cli("identify", "--index", idx, probe))
    assert rec["label"] == "track8"


def test_label_from_parent(library, tmp_path):
    refs = tmp_path / "refs"
    for artist, label in (("alpha", "track4"), ("beta", "track5")):
        (refs / artist).mkdir(parents=True)
        shutil.copy(library.ref_path(label), refs / artist / "master.wav")
    proc = run_cli("index", "build", refs, "--index", tmp_path / "idx", "--label-from", "parent")
    assert proc.returncode == 0, proc.stderr
    reader = IndexReader(str(tmp_path / "idx"))
    assert sorted(t.label for t in reader.catalog.tracks()) == ["alpha", "beta"]
    reader.close()


def test_build_reports_and_skips_unreadable_files(library, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(library.ref_path("track1"), refs / "good.wav")
    (refs / "empty.mp3").write_bytes(b"")
    (refs / "text.mp3").write_text("this is not audio\n" * 50)
    (refs / "noise.wav").write_bytes(np.random.default_rng(0).bytes(20000))
    proc = run_cli("index", "build", refs, "--index", tmp_path / "idx")
    assert proc.returncode == 0, proc.stderr
    assert "1 added, 0 duplicate(s), 3 failed" in proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.strip().startswith("failed")]
    assert len(failed) == 3
    for name in ("empty.mp3", "text.mp3", "noise.wav"):
        assert any(name in line for line in failed)


def test_build_with_unusable_source_or_index_exits_1(library, tmp_path):
    missing = run_cli("index", "build", tmp_path / "nowhere", "--index", tmp_path / "idx")
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "no such file" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("file,name\nx.wav,x\n")
    proc = run_cli("index", "build", bad, "--index", tmp_path / "idx")
    assert proc.returncode == 1 and "lacks column" in proc.stderr
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "keep.txt").write_text("mine")
    proc = run_cli("index", "build", library.refs, "--index", tmp_path / "stuff")
    assert proc.returncode == 1 and "not an ml-audio-id index" in proc.stderr
    assert (tmp_path / "stuff" / "keep.txt").read_text() == "mine"
    proc = run_cli("index", "add", library.refs, "--index", tmp_path / "never-built")
    assert proc.returncode == 1 and "never-built" in proc.stderr
    for cmd in (("index", "stats"), ("identify", library.refs)):
        proc = run_cli(*cmd, "--index", tmp_path / "stuff")
        assert proc.returncode == 1 and "not an ml-audio-id index" in proc.stderr and proc.stdout == ""


# ---------------------------------------------------------------------------------------------- identify ---

def test_identify_jsonl_fields_input_order_and_folder_recursion(library, queries):
    inputs = [queries["speech"], queries["track2"], queries["dir"], queries["track1"]]
    recs = _jsonl(run_cli("identify", "--index", library.index, *inputs))
    for rec in recs:
        assert tuple(rec) == FIELDS
    folder = sorted(["a1.wav", "b/b2.wav", "b/deeper/c3.flac", "b/unknown.wav", "speech.wav"])
    expect_paths = [queries["speech"], queries["track2"], *[os.path.join(queries["dir"], f) for f in folder],
                    queries["track1"]]
    assert [r["path"] for r in recs] == expect_paths
    by_path = {r["path"]: r for r in recs}
    for label in ("track1", "track2", "track3"):
        r = by_path[queries[label]]
        assert (r["status"], r["label"], r["track_id"]) == ("match", label, int(label[5:]))
        assert r["offset_s"] == pytest.approx(library.duration(label) - 10, abs=0.15)
        assert (r["query_start_s"], r["query_end_s"]) == pytest.approx((4.0, 14.0), abs=0.01)
        assert r["score"] > 0 and 0.5 < r["confidence"] <= 1 and r["speed"] == pytest.approx(1.0)
        assert r["error"] is None
    for key in ("unknown", "speech"):
        r = by_path[queries[key]]
        assert r["status"] == "no_match" and r["label"] is None and r["track_id"] is None


def test_identify_csv_and_table(library, queries):
    proc = run_cli("identify", "--index", library.index, queries["track1"], queries["unknown"], "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert tuple(rows[0]) == FIELDS
    assert [(r["status"], r["label"]) for r in rows] == [("match", "track1"), ("no_match", "")]
    assert float(rows[0]["confidence"]) > 0.5 and rows[1]["error"] == ""

    table = run_cli("identify", "--index", library.index, queries["track1"], queries["unknown"], "--format", "table")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["path", "status", "label"] and set(lines[1]) <= {"-", " "}
    assert "match" in lines[2] and "track1" in lines[2] and "no_match" in lines[3]
    assert len(lines) == 4


def test_identify_jobs_2_matches_jobs_1(library, queries):
    inputs = [queries["dir"], queries["track1"], str(library.refs / "missing.wav")]
    one = _jsonl(run_cli("identify", "--index", library.index, *inputs))
    two = _jsonl(run_cli("identify", "--index", library.index, *inputs, "--jobs", "2"))
    assert one == two and len(one) == 7 and one[-1]["status"] == "error"


def test_identify_search_options_reach_every_process(library, tmp_path):
    """--max-tempo-change 0 searches no time compression, in this process and in --jobs workers alike; the
    library takes the same as a MatchConfig."""
    files = []
    for k, label in enumerate(("track3", "track6")):
        files.append(tmp_path / f"{label}-tempo.wav")
        sf.write(files[-1], outro_recording(library, label, talk_seed=k, tempo=1.04), SR)
    found = _jsonl(run_cli("identify", "--index", library.index, *files))
    assert [(r["status"], r["label"], r["pitch"]) for r in found] == [("match", "track3", 1.0), ("match", "track6", 1.0)]
    assert all(r["speed"] == pytest.approx(1.04, abs=0.006) for r in found)
    for jobs in ("1", "2"):
        off = _jsonl(run_cli("identify", "--index", library.index, *files, "--max-tempo-change", "0", "--jobs", jobs))
        assert [r["status"] for r in off] == ["no_match", "no_match"], (jobs, off)
    lib = audioid.identify(library.index, files, config=MatchConfig(max_tempo_change=0))
    assert [r.status for r in lib] == ["no_match", "no_match"]
    assert run_cli("identify", "--index", library.index, *files, "--max-speed-change", "0.5").returncode == 2
    # The help's defaults are the library's.
    helptext = " ".join(run_cli("identify", "--help").stdout.split())
    defaults = MatchConfig()
    assert f"[default: {defaults.max_tempo_change}]" in helptext.split("--max-tempo-change")[1].split("--")[0]
    assert f"[default: {defaults.max_speed_change}]" in helptext.split("--max-speed-change")[1].split("--")[0]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    kids: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.update(int(k) for k in f.read().split())
        except FileNotFoundError:       # the thread ended meanwhile
            pass
    return kids.union(*(_descendants(k) for k in kids if os.path.exists(f"/proc/{k}")))


needs_two_cores_and_proc = pytest.mark.skipif(
    usable_cores() < 2 or not os.path.exists("/proc/self/task"), reason="needs two cores and Linux /proc")


@needs_two_cores_and_proc
def test_identify_by_default_starts_no_worker_for_a_short_batch(library, queries):
    files = [queries["track1"], queries["unknown"], queries["track2"], queries["speech"]]
    before = _descendants(os.getpid())
    auto = []
    for _path, records in audioid.iter_identify(library.index, files, jobs=None):
        assert _descendants(os.getpid()) <= before          # nothing started: the batch is done in a moment
        auto += records
    assert [r.to_dict() for r in auto] == [r.to_dict() for r in audioid.identify(library.index, files)]


@needs_two_cores_and_proc
def test_identify_by_default_hands_a_long_batch_to_workers(library, queries):
    files = [queries["track1"], queries["unknown"], queries["track3"], queries["speech"]] * 4
    serial = [r.to_dict() for r in audioid.identify(library.index, files)]
    before = _descendants(os.getpid())
    batch = audioid.iter_identify(library.index, files, jobs=None)
    got = [next(batch), next(batch)]
    time.sleep(0.3)     # the batch now looks long: 14 files left at 0.3 s or more each
    got.append(next(batch))     # the workers start while this process identifies the third file
    deadline = time.monotonic() + 60
    while len(workers := _descendants(os.getpid()) - before) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) >= 2, "no workers started"
    # Started workers go idle (their CPU stops growing) once the index is open; the next file goes to them.
    ticks = -1
    while ticks != (ticks := sum(map(cpu_ticks, workers))) and time.monotonic() < deadline:
        time.sleep(0.5)
    got += [next(batch) for _ in range(len(files) - len(got) - 1)]
    assert sum(map(cpu_ticks, workers)) > ticks, "the workers identified nothing"    # read before they exit
    got += list(batch)
    assert [path for path, _ in got] == files
    assert [r.to_dict() for _, records in got for r in records] == serial


def _on_a_terminal(*args: str | os.PathLike, stdout_too: bool = False) -> tuple[int, str, str]:
    """Run the CLI with stderr (and with ``stdout_too`` stdout) on a pseudo-terminal, else stdout on a pipe:
    (exit status, what the pipe got, what the terminal got)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))     # a new pty is 0 columns wide
    proc = subprocess.Popen([*audioid_command(), *map(str, args)],
                            stdout=slave if stdout_too else subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:         # EIO: the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = "" if stdout_too else proc.stdout.read().decode()
    return proc.wait(timeout=120), out, seen.decode(errors="replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs pseudo-terminals")
def test_identify_draws_a_progress_bar_on_a_terminal_while_records_go_elsewhere(library, queries):
    files = [queries["track1"], queries["unknown"], queries["track2"]]
    status, out, terminal = _on_a_terminal("identify", "--index", library.index, *files)
    assert status == 0, terminal
    assert [json.loads(line)["path"] for line in out.splitlines()] == files     # the records are untouched
    assert "identifying:" in terminal and "/3 [" in terminal, terminal
    # Records on the terminal (a table) are the progress: no bar among them.
    status, _, terminal = _on_a_terminal("identify", "--index", library.index, *files, stdout_too=True)
    assert status == 0 and "identifying" not in terminal, terminal
    assert terminal.count("match") >= 3 and all(os.path.basename(f) in terminal for f in files), terminal
    # Piped stderr, as in every other test: no bar at all.
    proc = run_cli("identify", "--index", library.index, *files)
    assert proc.returncode == 0 and proc.stderr == ""


def test_all_matches_finds_both_tracks_of_a_concatenation(library, tmp_path):
    a, b = library.tracks["track2"], library.tracks["track6"]
    y = np.concatenate([a[5 * SR:20 * SR], np.zeros(3 * SR, np.float32), b[10 * SR:25 * SR]])
    path = tmp_path / "two.wav"
    sf.write(path, y, SR)
    recs = _jsonl(run_cli("identify", "--index", library.index, path, "--all-matches"))
    assert [(r["status"], r["label"]) for r in recs] == [("match", "track2"), ("match", "track6")], recs
    first, second = recs
    assert first["query_start_s"] <= 1.0 and 14.0 <= first["query_end_s"] <= 21.0
    assert 12.0 <= second["query_start_s"] <= 19.0 and second["query_end_s"] >= 32.0
    assert first["query_end_s"] <= second["query_end_s"]
    # offset_s is the reference time at the record's query_start_s.
    assert first["offset_s"] - first["query_start_s"] == pytest.approx(5.0, abs=0.15)
    assert second["offset_s"] - second["query_start_s"] == pytest.approx(10.0 - 18.0, abs=0.15)
    # Without --all-matches the outro (last 10 s) is the second track.
    [single] = _jsonl(run_cli("identify", "--index", library.index, path))
    assert single["label"] == "track6"


@pytest.fixture(scope="module")
def bad_files(library, tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.mp3"
    synth.write_mp3(good, outro_recording(library, "track5"), SR, 64)
    files = {
        "corrupt": d / "corrupt.wav",
        "empty": d / "empty.mp3",
        "truncated": d / "truncated.wav",
        "not-audio": d / "document.mp3",
        "missing": d / "missing.mp3",
    }
    files["corrupt"].write_bytes(b"RIFF" + np.random.default_rng(1).bytes(30000))
    files["empty"].write_bytes(b"")
    wav = d / "full.wav"
    sf.write(wav, outro_recording(library, "track4"), SR)
    files["truncated"].write_bytes(wav.read_bytes()[:30])      # cut inside the header
    files["not-audio"].write_text("%PDF-1.4 a document renamed to .mp3\n" * 200)
    return {"good": str(good), **{k: str(v) for k, v in files.items()}}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_files_get_error_records_and_the_batch_goes_on(library, bad_files, queries, jobs):
    order = ["corrupt", "good", "empty", "truncated", "not-audio", "missing"]
    inputs = [bad_files[k] for k in order] + [queries["track3"]]
    proc = run_cli("identify", "--index", library.index, *inputs, "--jobs", jobs)
    recs = _jsonl(proc)                                        # exit 0: every file got its record
    assert [r["path"] for r in recs] == inputs
    statuses = dict(zip(order + ["after"], recs))
    assert (statuses["good"]["status"], statuses["good"]["label"]) == ("match", "track5")
    assert (statuses["after"]["status"], statuses["after"]["label"]) == ("match", "track3")
    for key in ("corrupt", "empty", "truncated", "not-audio", "missing"):
        r = statuses[key]
        assert r["status"] == "error" and r["error"].startswith(bad_files[key] + ": "), r
        assert r["label"] is None and r["score"] == 0
    assert "empty" in statuses["empty"]["error"] and "no such file" in statuses["missing"]["error"]


def test_truncated_mp3_outro_is_identified(library, tmp_path):
    full = tmp_path / "full.mp3"
    synth.write_mp3(full, library.tracks["track7"][: 24 * SR], SR, 64)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])                   # a recording that stopped after about 12 s
    real_end = len(sf.read(cut)[0]) / SR
    [rec] = _jsonl(run_cli("identify", "--index", library.index, cut))
    assert (rec["status"], rec["label"]) == ("match", "track7"), rec
    assert (rec["query_start_s"], rec["query_end_s"]) == pytest.approx((real_end - 10, real_end), abs=0.1)


def test_folders_built_and_added_with_a_class_make_the_class_vote_work(library, queries, tmp_path):
    talk = tmp_path / "talk"
    talk.mkdir()
    for seed in range(3):
        sf.write(talk / f"talk{seed}.wav", synth.speech_like(40 + seed, 30.0, SR), SR)
    manifest = tmp_path / "more.csv"
    sf.write(tmp_path / "jingle.wav", synth.music_track(555, 20.0, SR), SR)
    sf.write(tmp_path / "ad.wav", synth.music_track(556, 20.0, SR), SR)
    manifest.write_text("path,label,class\njingle.wav,jingle,\nad.wav,ad,music\n")
    idx = tmp_path / "idx"
    assert run_cli("index", "build", library.refs, "--index", idx, "--class", "music").returncode == 0
    # Only songs are labelled: the package's built-in examples vote too (tests/test_examples.py).
    assert json.loads(run_cli("index", "stats", "--index", idx, "--json").stdout)["builtin_examples"] is True
    assert run_cli("index", "add", talk, "--index", idx, "--class", "dialogue").returncode == 0
    # A manifest row with no class of its own takes --class; a row's own class stays.
    assert run_cli("index", "add", manifest, "--index", idx, "--class", "both").returncode == 0
    reader = IndexReader(str(idx))
    try:
        classes = {t.label: t.klass for t in reader.catalog.tracks()}
    finally:
        reader.close()
    assert classes == {**{lab: "music" for lab in library.tracks}, "talk0": "dialogue", "talk1": "dialogue",
                       "talk2": "dialogue", "jingle": "both", "ad": "music"}
    stats = json.loads(run_cli("index", "stats", "--index", idx, "--json").stdout)
    assert stats["classes"] == {"music": 9, "dialogue": 3, "both": 1, "unlabelled": 0}
    text = run_cli("index", "stats", "--index", idx).stdout
    assert "classes         music 9, dialogue 3, both 1, unlabelled 0" in text
    speech, song = _jsonl(run_cli("identify", "--index", idx, queries["speech"], queries["track2"]))
    assert (speech["status"], speech["class"]) == ("no_match", "dialogue"), speech
    assert (song["label"], song["class"]) == ("track2", "music"), song
    bad = run_cli("index", "add", talk, "--index", idx, "--class", "jingle")
    assert bad.returncode == 2 and "jingle" in bad.stderr


def test_identify_missing_index_exits_1_with_message(queries, tmp_path):
    proc = run_cli("identify", "--index", tmp_path / "no-index", queries["track1"])
    assert proc.returncode == 1
    assert "no-index" in proc.stderr and "no such index" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("args", [
    ["identify", "--index", "IDX"],                                   # no PATH
    ["identify", "PATH"],                                             # no --index
    ["identify", "--index", "IDX", "PATH", "--format", "xml"],
    ["identify", "--index", "IDX", "PATH", "--jobs", "0"],
    ["index", "build", "--index", "IDX"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(library, queries, args):
    args = [str(library.index) if a == "IDX" else queries["track1"] if a == "PATH" else a for a in args]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Usage:" in proc.stderr


def test_folder_without_audio_exits_1(library, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    proc = run_cli("identify", "--index", library.index, tmp_path / "docs")
    assert proc.returncode == 1 and "no audio files" in proc.stderr


# ------------------------------------------------------------------------------------------------- demo ---

def test_demo_runs_and_keeps_a_usable_index(tmp_path):
    proc = run_cli("demo", "--keep", tmp_path / "demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "expected" in proc.stdout and "9/9 as expected" in proc.stdout
    recs = _jsonl(run_cli("identify", "--index", tmp_path / "demo" / "index", tmp_path / "demo" / "queries"))
    assert len(recs) == 9 and sum(r["status"] == "match" for r in recs) == 7
    tempo = next(r for r in recs if "tempo" in r["path"])
    assert tempo["speed"] == pytest.approx(1.03, abs=0.006) and tempo["pitch"] == 1.0


# ----------------------------------------------------------------------------------------- Python facade ---

def test_python_facade(library, queries, tmp_path):
    report = audioid.build_index(library.refs, tmp_path / "idx", jobs=1)
    assert len(report.added) == 8
    results = audioid.identify(tmp_path / "idx", [queries["track1"], queries["unknown"]])
    assert [(r.status, r.label) for r in results] == [("match", "track1"), ("no_match", None)]
    [one] = audioid.identify(tmp_path / "idx", queries["track2"])
    assert one.label == "track2"
    assert [r.path for r in audioid.identify(tmp_path / "idx", queries["dir"], jobs=2)] == \
           [r.path for r in audioid.identify(tmp_path / "idx", queries["dir"])]
