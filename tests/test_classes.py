"""Music / dialogue / both through the real index: labelled references, kNN votes in identify records, online
learning of classes, the drift report, and configurable FAISS index types."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import audioid
from audioid import synth
from audioid.index.build import add_to_index, build_index, relabel_in_index, remove_from_index
from audioid.index.identify import Identifier
from audioid.index.report import drift_report
from audioid.index.sources import reference_specs
from audioid.index.store import IndexReader, IndexStoreError

from conftest import run_cli

SR = 16000
SECONDS = 25.0


def _music(seed: int) -> np.ndarray:
    return synth.music_track(300 + seed, SECONDS, SR)


def _speech(seed: int) -> np.ndarray:
    return synth.speech_like(300 + seed, SECONDS, SR)


def _both(seed: int) -> np.ndarray:
    return synth.mix_at_snr(synth.music_track(400 + seed, SECONDS, SR), synth.speech_like(400 + seed, SECONDS, SR), 0.0)


MAKERS = {"music": _music, "dialogue": _speech, "both": _both}


def _write_manifest(folder: Path, rows: list[tuple[str, str, np.ndarray]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "class"])
        for label, klass, y in rows:
            sf.write(folder / f"{label}.wav", y, SR)
            w.writerow([f"{label}.wav", label, klass])
    return folder / "manifest.csv"


def _rows(seeds: range) -> list[tuple[str, str, np.ndarray]]:
    return [(f"{klass}{s}", klass, make(s)) for s in seeds for klass, make in MAKERS.items()]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Manifest of 3 labelled tracks per class."""
    return _write_manifest(tmp_path_factory.mktemp("labelled"), _rows(range(3)))


@pytest.fixture(scope="module")
def index(labelled, tmp_path_factory) -> Path:
    idx = tmp_path_factory.mktemp("classes") / "idx"
    report = build_index(reference_specs(str(labelled)), idx, jobs=1)
    assert len(report.added) == 9 and not report.failed
    return idx


def _query(tmp_path: Path, name: str, y: np.ndarray) -> str:
    path = tmp_path / f"{name}.wav"
    sf.write(path, y, SR)
    return str(path)


@pytest.mark.parametrize("klass", list(MAKERS))
def test_unseen_audio_of_each_class_is_classed(index, tmp_path, klass):
    # New material of the class, not in the index: no landmark match, but the vote names the class.
    r = audioid.identify(index, _query(tmp_path, klass, MAKERS[klass](50)))[0]
    assert r.status == "no_match"
    assert r.klass == klass and 0.5 < r.class_confidence <= 1.0
    sims = [n["similarity"] for n in r.neighbours]
    assert 1 <= len(sims) <= 3 and sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0001 for s in sims)
    assert all(n["label"].startswith(klass) for n in r.neighbours[:1])


def test_matched_reference_excerpt_names_itself_as_nearest(index, labelled, tmp_path):
    y, _ = sf.read(labelled.parent / "music1.wav", dtype="float32")
    r = audioid.identify(index, _query(tmp_path, "excerpt", y[-10 * SR:]))[0]
    assert (r.status, r.label, r.klass) == ("match", "music1", "music")
    assert r.neighbours[0]["label"] == "music1" and r.neighbours[0]["similarity"] > 0.99


def test_class_fields_in_every_output_format(index, tmp_path):
    q = _query(tmp_path, "speech", _speech(51))
    rec = json.loads(run_cli("identify", "--index", index, q).stdout)
    assert rec["class"] == "dialogue" and rec["class_confidence"] > 0.5
    assert set(rec["neighbours"][0]) == {"track_id", "label", "similarity"}
    rows = list(csv.DictReader(run_cli("identify", "--index", index, "--format", "csv", q).stdout.splitlines()))
    assert rows[0]["class"] == "dialogue" and json.loads(rows[0]["neighbours"])[0]["label"]
    table = run_cli("identify", "--index", index, "--format", "table", q).stdout
    assert "class" in table.splitlines()[0] and "dialogue" in table


def test_error_records_carry_no_class(index, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all")
    r = audioid.identify(index, str(bad))[0]
    assert r.status == "error" and r.klass is None and r.neighbours is None


def test_relabel_and_remove_change_the_vote_at_once(labelled, tmp_path):
    idx = tmp_path / "idx"
    build_index(reference_specs(str(labelled)), idx, jobs=1)
    q = _query(tmp_path, "speech", _speech(52))
    assert audioid.identify(idx, q)[0].klass == "dialogue"
    reader = IndexReader(str(idx))
    speech_ids = [t.id for t in reader.catalog.tracks() if t.klass == "dialogue"]
    reader.close()
    for tid in speech_ids:           # an editor decides these were all "both"
        relabel_in_index(str(idx), tid, klass="both")
    assert audioid.identify(idx, q)[0].klass == "both"
    remove_from_index(str(idx), speech_ids)
    r = audioid.identify(idx, q)[0]
    assert not {n["track_id"] for n in r.neighbours} & set(speech_ids)


def test_adds_are_predicted_first_and_the_drift_report_scores_them(labelled, tmp_path):
    idx = tmp_path / "idx"
    build_index(reference_specs(str(labelled)), idx, jobs=1)
    more = _write_manifest(tmp_path / "more", _rows(range(10, 12)))
    rep = add_to_index(reference_specs(str(more)), idx, jobs=1, who="labeller")
    assert len(rep.added) == 6
    log = [e for e in IndexReader(str(idx)).catalog.log_entries() if e["who"] == "labeller"]
    assert len(log) == 6 and all(e["predicted"] in ("music", "dialogue", "both", "unknown") for e in log)
    assert all(0.0 < e["nn_similarity"] <= 1.0001 for e in log)
    report = drift_report(idx, batch=4)
    assert report["tracks"] == 15
    assert report["class_balance"] == {"music": 5, "dialogue": 5, "both": 5}
    assert report["predicted"]["n"] == 6 and [t["n"] for t in report["trend"]] == [4, 2]
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 6
    correct = sum(report["confusion"][c].get(c, 0) for c in report["confusion"])
    assert report["predicted"]["accuracy"] == pytest.approx(correct / 6, abs=1e-4)
    assert correct >= 5    # easy synthetic classes: the index already knows what each looks like
    # A later relabel is the truth the prediction is scored against.
    first = next(e for e in log if e["predicted"] == e["class"])
    relabel_in_index(str(idx), first["track_id"], klass=next(c for c in MAKERS if c != first["class"]))
    assert drift_report(idx)["predicted"]["accuracy"] < report["predicted"]["accuracy"]

    text = run_cli("index", "report", "--index", idx)
    assert text.returncode == 0 and "Prequential" in text.stdout and "confusion" in text.stdout
    as_json = json.loads(run_cli("index", "report", "--index", idx, "--json").stdout)
    assert as_json["predicted"]["n"] == 6


def test_report_of_an_index_without_adds_says_so(index):
    out = run_cli("index", "report", "--index", index)
    assert out.returncode == 0 and "no predictions yet" in out.stdout


@pytest.mark.parametrize("factory", ["HNSW16", "IVF4,Flat"])
def test_approximate_vector_index_types_answer_like_exact(index, labelled, tmp_path, factory):
    idx = tmp_path / "idx"
    rc = run_cli("index", "build", labelled, "--index", idx, "--vector-index", factory, "--jobs", "1")
    assert rc.returncode == 0, rc.stderr
    assert IndexReader(str(idx)).embedding.factory == factory
    q = _query(tmp_path, "speech", _speech(53))
    exact, approx = Identifier.open(index).identify_file(q), Identifier.open(idx).identify_file(q)
    assert approx.klass == exact.klass
    assert approx.neighbours[0]["track_id"] == exact.neighbours[0]["track_id"]
    # A rebuild keeps the index type unless told otherwise.
    build_index(reference_specs(str(labelled)), idx, jobs=1)
    assert IndexReader(str(idx)).embedding.factory == factory


def test_unusable_vector_index_type_is_refused_clearly(labelled, tmp_path):
    out = run_cli("index", "build", labelled, "--index", tmp_path / "idx", "--vector-index", "Bogus42")
    assert out.returncode == 1 and "Bogus42" in out.stderr and "index_factory" in out.stderr
    with pytest.raises(IndexStoreError, match="Bogus42"):
        build_index(reference_specs(str(labelled)), tmp_path / "idx2", vector_index="Bogus42")
