"""Label sessions over real clip files: answers, undo, resume, export, online learning, the page over real HTTP
and in headless Chromium."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

import audioid
from audioid import synth
from audioid.index.hcgl import HcglConfig
from audioid.index.labelling import LabelSession
from audioid.index.store import read_jsonl

from conftest import run_cli

SR = 16000


def truth_of(name: str) -> str:
    return "music" if os.path.basename(name).startswith("m") else "dialogue"


@pytest.fixture()
def pool(tmp_path) -> Path:
    """Six synthetic music clips and six speech clips of 10 s."""
    d = tmp_path / "pool"
    d.mkdir()
    for i in range(6):
        sf.write(d / f"m{i}.wav", synth.music_track(i + 1, 10.0, SR), SR)
        sf.write(d / f"s{i}.wav", synth.speech_like(i + 1, 10.0, SR), SR)
    return d


def answer_current(s: LabelSession) -> dict:
    q = s.question()
    s.answer(q["clip"]["hash"], truth_of(q["clip"]["name"]))
    return q


def test_a_pool_without_readable_clips_is_refused_clearly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.wav").write_text("not audio")
    for pool in (empty, tmp_path / "junk"):
        with pytest.raises(ValueError, match="no readable audio clips"):
            LabelSession(pool)
    r = run_cli("label", "--pool", empty, "--port", "65500", timeout=30)
    assert r.returncode != 0 and "no readable audio clips" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", ["guided", "uncertain", "random"])
def test_session_labels_everything_correctly(pool, mode):
    s = LabelSession(pool, mode=mode)
    heard = 0
    while s.question()["clip"]:
        answer_current(s)
        heard += 1
    p = s.progress()
    assert p["labelled"] == 12 and p["counts"] == {"music": 6, "dialogue": 6, "both": 0}
    assert heard == 12 if mode != "guided" else heard < 12     # guided labels groups from a few checks
    latest = {}
    for e in read_jsonl(str(pool / "labels.jsonl")):
        latest[e["content_hash"]] = e
    assert all(e["class"] == truth_of(e["source"]) for e in latest.values())


def test_undo_skip_resume_and_export(pool, tmp_path):
    s = LabelSession(pool, mode="random")
    first = answer_current(s)
    second = s.question()
    s.skip(second["clip"]["hash"])
    third = answer_current(s)
    assert s.undo()                                    # takes back the third answer
    assert s.question()["clip"]["hash"] == third["clip"]["hash"]
    assert s.progress()["labelled"] == 1 and s.progress()["skipped"] == 1
    log = read_jsonl(str(pool / "labels.jsonl"))
    assert [e["action"] for e in log] == ["add", "skip", "add", "remove"]
    assert log[-1]["undoes"] == 3 and log[-1]["content_hash"] == third["clip"]["hash"]
    # A new session replays the log: same state, same next clip.
    again = LabelSession(pool, mode="random")
    assert again.progress() == s.progress()
    assert again.question()["clip"]["hash"] == third["clip"]["hash"]
    with pytest.raises(Exception, match="no longer"):
        again.answer(first["clip"]["hash"], "music")
    # Export through the real command; the manifest builds an index with those classes.
    proc = run_cli("label", "export", "--pool", pool, "--out", tmp_path / "labels.csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    assert [(r["path"], r["class"]) for r in rows] == [
        (os.path.join("pool", first["clip"]["name"]), truth_of(first["clip"]["name"]))]
    report = audioid.build_index(tmp_path / "labels.csv", tmp_path / "idx", jobs=1)
    assert [t.klass for t in report.added] == [truth_of(first["clip"]["name"])]


def test_a_disputed_group_label_is_reviewed_undone_and_resumed(pool):
    # Every clip heard, then one speech clip given "music" by a group answer (as a wrong group label is): the
    # guided session hears it again, its answer replaces the group label, and undo gives the group label back.
    s = LabelSession(pool, mode="random")
    while s.question()["clip"]:
        answer_current(s)
    speech = next(c for c in s.clips if c.name.startswith("s"))
    wrong = dict(read_jsonl(str(pool / "labels.jsonl"))[-1], content_hash=speech.content_hash, action="relabel",
                 **{"class": "music", "via": "group", "answer": 99, "previous": "dialogue"})
    with open(pool / "labels.jsonl", "a") as f:
        f.write(json.dumps(wrong) + "\n")
    cfg = HcglConfig(flag_min_labels=5)
    g = LabelSession(pool, mode="guided", cfg=cfg)
    q = g.question()
    assert q["clip"]["hash"] == speech.content_hash and q["review"] == {"labelled": "music"} and q["group"] is None
    g.answer(speech.content_hash, "dialogue")
    assert g.question()["clip"] is None and g.progress()["heard"] == 12
    last = read_jsonl(str(pool / "labels.jsonl"))[-1]
    assert (last["action"], last["class"], last["via"], last["previous"], last["previous_via"]) == (
        "relabel", "dialogue", "heard", "music", "group")
    assert g.undo()
    assert g.question()["review"] == {"labelled": "music"} and g.progress()["heard"] == 11
    # A new session replays the log to the same state.
    assert LabelSession(pool, mode="guided", cfg=cfg).question()["clip"]["hash"] == speech.content_hash


def test_index_learns_each_label_and_guesses(pool, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    sf.write(refs / "music-ref.wav", synth.music_track(40, 30.0, SR), SR)
    sf.write(refs / "talk-ref.wav", synth.speech_like(40, 30.0, SR), SR)
    with open(tmp_path / "refs.csv", "w") as f:
        f.write("path,label,class\nrefs/music-ref.wav,music-ref,music\nrefs/talk-ref.wav,talk-ref,dialogue\n")
    idx = tmp_path / "idx"
    audioid.build_index(tmp_path / "refs.csv", idx, jobs=1)
    s = LabelSession(pool, index=idx, mode="random")
    q = s.question()
    assert q["guess"] is not None and q["guess"]["class"] == truth_of(q["clip"]["name"])
    answer_current(s)
    s.undo()
    answer_current(s)
    s.wait()
    log = [e for e in audioid.index.store.IndexReader(str(idx)).catalog.log_entries() if e["label"] == Path(q["clip"]["name"]).stem]
    assert [e["action"] for e in log] == ["add", "remove", "add"]
    assert log[-1]["class"] == truth_of(q["clip"]["name"])
    s.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def server(pool):
    """The real `audioid label` command serving the pool (waitress) on a free port."""
    from conftest import audioid_command

    port = free_port()
    proc = subprocess.Popen([*audioid_command(), "label", "--pool", str(pool), "--mode", "random", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/api/state", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"label server did not start: {proc.communicate()[1]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_http_api(server):
    state = json.load(urllib.request.urlopen(server + "/api/state"))
    clip = state["clip"]
    audio = urllib.request.urlopen(f"{server}/clip/{clip['id']}").read()
    assert audio[:4] == b"RIFF"
    status, after = post(server + "/api/answer", {"hash": clip["hash"], "class": "music"})
    assert status == 200 and after["progress"]["labelled"] == 1 and after["clip"]["hash"] != clip["hash"]
    assert post(server + "/api/answer", {"hash": clip["hash"], "class": "music"})[0] == 409
    assert post(server + "/api/answer", {"hash": after["clip"]["hash"], "class": "jazz"})[0] == 400
    assert post(server + "/api/answer", {"class": "music"})[0] == 400
    status, undone = post(server + "/api/undo", {})
    assert status == 200 and undone["clip"]["hash"] == clip["hash"] and undone["progress"]["labelled"] == 0
    html = urllib.request.urlopen(server + "/").read().decode()
    assert "label.js" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_page_in_headless_chromium(server, pool, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(server + "/")
        wait = WebDriverWait(driver, 20)

        def clip_name() -> str:
            return driver.find_element(By.ID, "clipname").text

        def press(key: str, before: str) -> None:
            driver.find_element(By.TAG_NAME, "body").send_keys(key)
            wait.until(lambda d: clip_name() != before)

        wait.until(lambda d: clip_name().endswith(".wav"))
        answered = []
        for _ in range(3):
            name = clip_name()
            answered.append(name)
            press("m" if truth_of(name) == "music" else "d", name)
        wait.until(lambda d: "3 of 12 labelled" in d.find_element(By.ID, "progress").text)
        press("u", clip_name())                               # undo the third answer
        assert clip_name() == answered[2]
        wait.until(lambda d: "2 of 12 labelled" in d.find_element(By.ID, "progress").text)
        timings = driver.execute_script("return window.labelTimings")
        driver.refresh()                                      # resume: same clip, same progress
        wait.until(lambda d: clip_name() == answered[2])
        assert "2 of 12 labelled" in driver.find_element(By.ID, "progress").text
        counts = driver.find_element(By.ID, "counts").text
        n_music = sum(truth_of(a) == "music" for a in answered[:2])
        assert f"music {n_music}" in counts and f"dialogue {2 - n_music}" in counts
    finally:
        driver.quit()
    log = read_jsonl(str(pool / "labels.jsonl"))
    assert [e["action"] for e in log] == ["add", "add", "add", "remove"]
    assert [os.path.basename(e["source"]) for e in log] == [*answered, answered[2]]
    # Keypress -> next clip playing (the audio element's 'playing' event), measured in the page.
    print(f"keypress to next clip playing: {', '.join(f'{t:.0f}' for t in timings)} ms")
    assert timings, "the page recorded no keypress-to-playing time"
