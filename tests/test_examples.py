"""The class vote's built-in examples: shipped data, when they vote, and what they change, through real indexes."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from audioid import build_index, synth
from audioid.fingerprint.embedding import EmbeddingConfig, Standardizer, default_standardizer, embedding_dim
from audioid.index.classify import CLASSES, ClassifyConfig, classify
from audioid.index.examples import Examples, examples_for, shipped_examples
from audioid.index.identify import Identifier
from audioid.index.store import IndexReader
from audioid.index.vectors import vector_ids

from conftest import run_cli

SR = 16000


def test_the_shipped_examples_are_balanced_unit_vectors_of_the_shipped_transform():
    ex = shipped_examples()
    assert ex is not None
    assert {c: int(np.sum(ex.classes == c)) for c in CLASSES} == dict.fromkeys(CLASSES, 729)
    assert ex.vectors.shape == (3 * 729, default_standardizer().out_dim)
    assert np.allclose(np.linalg.norm(ex.vectors, axis=1), 1.0, atol=1e-6)
    assert np.all(np.diff(ex.groups) >= 0)
    starts = np.flatnonzero(np.r_[True, np.diff(ex.groups) != 0])
    assert all(len(set(c)) == 1 for c in np.split(ex.classes, starts[1:]))       # one class per group
    assert examples_for(EmbeddingConfig(), default_standardizer()) is ex


def test_an_index_made_with_another_transform_votes_without_them():
    other = Standardizer.fit(np.random.default_rng(0).normal(size=(50, embedding_dim())), out_dim=8)
    assert examples_for(EmbeddingConfig(), other) is None


def test_a_group_votes_once_with_its_best_example():
    ex = Examples(np.eye(3, dtype=np.float32)[[0, 1, 2, 2]], np.array(["music", "music", "both", "both"]),
                  np.array([0, 0, 1, 1]))
    query = np.array([[0.6, 0.0, 0.8]], np.float32)
    assert ex.nearest(query, 5) == [[("both", pytest.approx(0.8)), ("music", pytest.approx(0.6))]]
    assert ex.nearest(query, 1) == [[("both", pytest.approx(0.8))]]


def test_examples_vote_like_labelled_tracks_but_are_not_neighbours():
    ids = np.concatenate([vector_ids(1, 1), vector_ids(2, 1)])
    sims = np.array([0.5, 0.45])
    songs = {1: "music", 2: "music"}
    assert classify(sims, ids, songs).klass == "music"
    c = classify(sims, ids, songs, examples=[("dialogue", 0.9), ("dialogue", 0.85)])
    assert c.klass == "dialogue"
    assert [t for t, _ in c.neighbours] == [1, 2]


@pytest.fixture(scope="module")
def songs_index(tmp_path_factory):
    """An index of six synthetic songs, all labelled music: it knows no talk."""
    root = tmp_path_factory.mktemp("songs")
    for seed in range(6):
        sf.write(root / f"song{seed}.wav", synth.music_track(700 + seed, 20.0, SR), SR)
    build_index(root, root / "idx", jobs=1, klass="music")
    return root / "idx"


def _talk_vector() -> np.ndarray:
    """A typical talk vector: the mean of the built-in dialogue examples, none of them itself."""
    ex = shipped_examples()
    v = ex.vectors[ex.classes == "dialogue"].mean(axis=0)
    return (v / np.linalg.norm(v))[None, :].astype(np.float32)


def test_an_index_of_songs_alone_tells_talk_from_music_by_the_built_in_examples(songs_index):
    reader = IndexReader(str(songs_index))
    try:
        assert reader.labelled_counts == {"music": 6, "dialogue": 0, "both": 0}
        assert reader.vote_examples(ClassifyConfig().examples_below) is shipped_examples()
        assert reader.vote_examples(0) is None
        [without] = reader.classify(_talk_vector(), ClassifyConfig(examples_below=0))
        [vote] = reader.classify(_talk_vector())
    finally:
        reader.close()
    assert without.klass == "unknown"       # its songs are all it can vote with, none like talk: it abstains
    assert vote.klass == "dialogue"
    assert [n["label"] for n in vote.neighbours] == [n["label"] for n in without.neighbours]   # songs only
    stats = json.loads(run_cli("index", "stats", "--index", songs_index, "--json").stdout)
    assert stats["builtin_examples"] is True
    assert "built-in and the index's" in run_cli("index", "stats", "--index", songs_index).stdout


def test_an_unlabelled_index_classes_music_as_music(library, tmp_path):
    outro = tmp_path / "outro.wav"
    sf.write(outro, library.tracks["track3"][-10 * library.sr:], library.sr)
    ident = Identifier.open(library.index)
    try:
        rec = ident.identify_file(str(outro))
        alone = Identifier(ident.reader, classify_config=replace(ident.classify_config, examples_below=0))
        rec_alone = alone.identify_file(str(outro))
    finally:
        ident.close()
    assert (rec.label, rec.klass) == ("track3", "music")
    assert rec_alone.klass == "unknown"                       # no labels of its own: it could only abstain
    assert rec.neighbours[0]["label"] == "track3"


def test_an_index_with_enough_labelled_tracks_of_every_class_votes_alone(tmp_path):
    makers = {"music": lambda s: synth.music_track(800 + s, 12.0, SR),
              "dialogue": lambda s: synth.speech_like(800 + s, 12.0, SR),
              "both": lambda s: synth.mix_at_snr(synth.music_track(900 + s, 12.0, SR),
                                                 synth.speech_like(900 + s, 12.0, SR), 0.0)}
    n = ClassifyConfig().examples_below
    rows = ["path,label,class"]
    for klass, make in makers.items():
        for s in range(n):
            sf.write(tmp_path / f"{klass}{s}.wav", make(s), SR)
            rows.append(f"{klass}{s}.wav,{klass}{s},{klass}")
    (tmp_path / "refs.csv").write_text("\n".join(rows) + "\n")
    build_index(tmp_path / "refs.csv", tmp_path / "idx", jobs=1)
    reader = IndexReader(str(tmp_path / "idx"))
    try:
        assert reader.labelled_counts == dict.fromkeys(CLASSES, n)
        assert reader.vote_examples(n) is None
        assert reader.stats()["builtin_examples"] is False
    finally:
        reader.close()
