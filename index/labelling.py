"""A labelling session over a pool of clips: what to ask next, the answers in an append-only label log, undo,
resume, online learning into an index, and export to a manifest ``audioid index build`` reads.

The log (``labels.jsonl`` in the pool by default) holds one JSON object per line with the index's label-log
fields (:data:`audioid.index.catalog.LOG_COLUMNS`) keyed by the clip's content hash: ``add`` when a clip gets its
first class, ``relabel`` when it changes, ``remove`` when an undo takes it back.  Each entry also records its
``answer`` (one key press; a group answer logs every clip it labels under one number), ``via`` (``heard``: the
annotator heard this clip; ``group``: labelled with its group), ``group`` (hierarchy node) and ``medoid``.  Two
actions carry no label and never reach an index: ``skip`` and ``split`` (a group called mixed); ``undo`` entries
take those back.  Nothing is ever rewritten: undo appends, and a session resumes by replaying the log.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..fingerprint.audio import AudioError, load
from ..fingerprint.discriminant import default_discriminant
from .build import content_hash, default_who
from .catalog import CLASSES, LOG_COLUMNS
from .embeddings import EmbeddingSetup
from .hcgl import GuidedQueue, HcglConfig, KnnState, Question, uncertain_order
from .sources import iter_audio_files
from .store import now_iso, read_jsonl

LOG_NAME = "labels.jsonl"
CACHE_NAME = ".audioid-pool.npz"
MODES = ("guided", "uncertain", "random")


@dataclass(frozen=True)
class PoolClip:
    """One clip of the pool."""

    name: str          # path relative to the pool folder
    path: str
    content_hash: str


def _pool_cache(pool: str) -> dict[str, tuple[int, int, str, np.ndarray]]:
    """``{name: (size, mtime_ns, content hash, vector)}`` from the pool's cache file (empty when unreadable)."""
    try:
        z = np.load(os.path.join(pool, CACHE_NAME), allow_pickle=False)
        return {str(n): (int(s), int(m), str(h), v) for n, s, m, h, v in
                zip(z["names"], z["sizes"], z["mtimes"], z["hashes"], z["vectors"])}
    except (OSError, KeyError, ValueError):
        return {}


def scan_pool(pool: str | os.PathLike, setup: EmbeddingSetup | None = None
              ) -> tuple[list[PoolClip], np.ndarray, list[tuple[str, str]]]:
    """The pool's clips, one transformed embedding per clip (its last window) and the clips that failed.

    Hashes and vectors are cached in the pool folder (``.audioid-pool.npz``, keyed by size and modification
    time), so only new or changed clips are decoded when a session starts again.

    Returns
    -------
    (list of PoolClip, np.ndarray, list of (name, error))
    """
    pool = os.fspath(pool)
    setup = setup or EmbeddingSetup.default()
    cache = _pool_cache(pool)
    clips, vectors, failed = [], [], []
    for path in iter_audio_files(pool):
        name = os.path.relpath(path, pool)
        st = os.stat(path)
        hit = cache.get(name)
        if hit and hit[:2] == (st.st_size, st.st_mtime_ns):
            digest, vec = hit[2], hit[3]
        else:
            try:
                digest = content_hash(path)
                vec = setup.query_vector(load(path, setup.sample_rate).samples, setup.sample_rate)[0]
            except (AudioError, OSError, ValueError) as e:
                failed.append((name, str(e)))
                continue
            cache[name] = (st.st_size, st.st_mtime_ns, digest, vec)
        clips.append(PoolClip(name, path, digest))
        vectors.append(vec)
    names = [c.name for c in clips]
    if names:
        np.savez(os.path.join(pool, CACHE_NAME), names=np.array(names), hashes=np.array([c.content_hash for c in clips]),
                 sizes=np.array([cache[n][0] for n in names]), mtimes=np.array([cache[n][1] for n in names]),
                 vectors=np.stack(vectors))
    if not vectors:
        return clips, np.zeros((0, setup.standardizer.out_dim), np.float32), failed
    return clips, np.array(vectors, np.float32), failed


def export_manifest(log_path: str, out_path: str, pool: str | None = None) -> int:
    """Write the latest class of every labelled clip in the log as a manifest ``path,label,class`` (paths relative
    to the manifest's folder); returns the number of rows."""
    latest: dict[str, dict] = {}
    for e in read_jsonl(log_path):
        if e["action"] in ("add", "relabel"):
            latest[e["content_hash"]] = e
        elif e["action"] == "remove":
            latest.pop(e["content_hash"], None)
    base = os.path.dirname(os.path.abspath(out_path))
    with open(out_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "class"])
        for e in latest.values():
            w.writerow([os.path.relpath(e["source"], base), e["label"], e["class"]])
    return len(latest)


class LabelSession:
    """Labelling of one pool: the next question, answers, undo, progress; thread-safe (one lock).

    Parameters
    ----------
    pool : path
        Folder of clips (e.g. ``audioid chunk`` output), searched recursively.
    log : path or None
        Label log (default ``POOL/labels.jsonl``); an existing log is replayed, so the session resumes.
    mode : str
        ``guided`` (HCGL), ``uncertain`` or ``random``.
    index : path or None
        Index that learns every label as it is given (added, relabelled, removed on undo) and whose kNN vote
        is offered as the guess for each clip.
    who : str or None
        Annotator name logged (default: :func:`audioid.index.build.default_who`).
    cfg : HcglConfig
    seed : int
        Order of the random mode.

    Examples
    --------
    >>> s = LabelSession("chunks/")                        # doctest: +SKIP
    >>> s.answer(s.question()["clip"]["hash"], "music")    # doctest: +SKIP
    """

    def __init__(self, pool: str | os.PathLike, *, log: str | os.PathLike | None = None, mode: str = "guided",
                 index: str | os.PathLike | None = None, who: str | None = None, cfg: HcglConfig = HcglConfig(),
                 seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.pool = os.fspath(pool)
        if not os.path.isdir(self.pool):
            raise FileNotFoundError(f"{self.pool}: no such folder")
        self.log_path = os.fspath(log) if log else os.path.join(self.pool, LOG_NAME)
        self.mode, self.who, self.index = mode, who or default_who(), os.fspath(index) if index else None
        self.clips, self.vectors, self.failed = scan_pool(self.pool)
        if not self.clips:
            raise ValueError(f"{self.pool}: no readable audio clips")
        self.by_hash = {c.content_hash: i for i, c in enumerate(self.clips)}
        self.tree = hashlib.sha1("".join(sorted(self.by_hash)).encode()).hexdigest()[:12]
        self.queue = GuidedQueue.for_pool(self.vectors, default_discriminant(), cfg) if mode == "guided" else None
        self.knn = KnnState(self.vectors, cfg.k, cfg.sharpness)
        self.order = np.random.default_rng(seed).permutation(len(self.clips))
        self.rng = np.random.default_rng(seed)
        self.lock = threading.RLock()
        self._learner = ThreadPoolExecutor(max_workers=1) if self.index else None
        self._identifier = None
        self._replay(read_jsonl(self.log_path))

    # ------------------------------------------------------------------------------------------- state ---

    def _replay(self, entries: Iterable[dict]) -> None:
        n = len(self.clips)
        self.labels = np.full(n, -1, np.int64)
        self.grouped, self.skipped = np.zeros(n, bool), np.zeros(n, bool)
        self.split: set[int] = set()
        self.answers: dict[int, list[dict]] = {}
        self.undone: set[int] = set()
        for e in entries:
            self._apply(e)
        self._question: Question | None = None

    def _apply(self, e: dict) -> None:
        """Fold one log entry into the state."""
        i = self.by_hash.get(e["content_hash"])
        if "undoes" in e:
            self.undone.add(e["undoes"])
        elif "answer" in e:
            self.answers.setdefault(e["answer"], []).append(e)
        act = e["action"]
        if act == "undo":
            for a in self.answers.get(e["undoes"], []):
                self._toggle(a, False)
        elif act in ("skip", "split"):
            self._toggle(e, True)
        elif i is not None and act in ("add", "relabel"):
            self.labels[i] = CLASSES.index(e["class"])
            # An undone review gives a clip back its group label, which is still not heard.
            self.grouped[i] = e.get("via") == "group" or (e.get("via") == "undo" and e.get("restores") == "group")
        elif i is not None and act == "remove":
            self.labels[i], self.grouped[i] = -1, False

    def _toggle(self, e: dict, on: bool) -> None:
        if e["action"] == "split" and e.get("tree") == self.tree:
            (self.split.add if on else self.split.discard)(e["group"])
        elif e["action"] == "skip" and e["content_hash"] in self.by_hash:
            self.skipped[self.by_hash[e["content_hash"]]] = on

    def _append(self, entries: list[dict]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps(e) + "\n")
            f.flush()
            os.fsync(f.fileno())      # an answer given is an answer kept, even if the machine dies next
        for e in entries:
            self._apply(e)
        self._question = None

    def _next_answer_id(self) -> int:
        return max(self.answers, default=0) + 1

    def _next(self) -> Question | None:
        if self._question is not None:
            return self._question
        handled = (self.labels >= 0) | self.skipped
        if self.mode == "guided":
            q = self.queue.next(self.labels, self.grouped, self.skipped, self.split)
        elif self.mode == "random":
            rest = self.order[~handled[self.order]]
            q = Question(-1, int(rest[0]), [], rest[:1]) if len(rest) else None
        else:
            i = uncertain_order(self.knn, self.labels, handled, self.rng)
            q = None if i is None else Question(-1, i, [], np.array([i]))
        self._question = q
        return q

    # ----------------------------------------------------------------------------------------- answers ---

    def _entry(self, i: int, action: str, answer: int, **extra) -> dict:
        c = self.clips[i]
        e = dict.fromkeys(LOG_COLUMNS)
        e.update(at=now_iso(), who=self.who, action=action, content_hash=c.content_hash,
                 label=os.path.splitext(c.name)[0], source=os.path.abspath(c.path), answer=answer, mode=self.mode)
        e.update(extra)
        return e

    def _label_entries(self, idx: Iterable[int], klass: str, answer: int, via: str, q: Question) -> list[dict]:
        medoid = self.clips[q.checks[0]].content_hash if q.checks else None
        return [self._entry(i, "relabel" if self.labels[i] >= 0 else "add", answer, **{
            "class": klass, "via": via, "group": q.node if q.node >= 0 else None, "medoid": medoid,
            "tree": self.tree, "previous": CLASSES[self.labels[i]] if self.labels[i] >= 0 else None,
            "previous_via": ("group" if self.grouped[i] else "heard") if self.labels[i] >= 0 else None})
            for i in idx]

    def _check(self, content_hash: str) -> Question:
        q = self._next()
        if q is None or self.clips[q.clip].content_hash != content_hash:
            raise StaleAnswer("that clip is no longer the one being asked about; reload")
        return q

    def answer(self, content_hash: str, klass: str, guess: dict | None = None) -> None:
        """Label the clip being asked about (named by its content hash, so a stale page cannot label another).

        When the answer completes a group's checks and they agree, the rest of the group is labelled under the
        same answer (so one undo takes both back).  ``guess`` (the kNN guess shown) is logged as the prediction.
        """
        if klass not in CLASSES:
            raise ValueError(f"class must be one of {', '.join(CLASSES)}, got {klass!r}")
        with self.lock:
            q = self._check(content_hash)
            aid = self._next_answer_id()
            pred = {} if not guess else {"predicted": guess.get("class"),
                                         "predicted_confidence": guess.get("confidence")}
            entries = [dict(e, **pred) for e in self._label_entries([q.clip], klass, aid, "heard", q)]
            self._append(entries)
            while self.mode == "guided":
                g = self._next()
                if g is None or g.clip >= 0:
                    break
                todo = [int(i) for i in g.members if self.labels[i] < 0 and not self.skipped[i]]
                group = self._label_entries(todo, CLASSES[g.klass], aid, "group", g)
                self._append(group)
                entries += group
            self._learn(entries)

    def skip(self, content_hash: str) -> None:
        """Leave the clip being asked about unlabelled (a skipped clip is not asked again, nor its groups)."""
        with self.lock:
            q = self._check(content_hash)
            self._append([self._entry(q.clip, "skip", self._next_answer_id())])

    def mixed(self, content_hash: str) -> None:
        """Call the group being checked mixed: it splits into its children (guided mode)."""
        with self.lock:
            q = self._check(content_hash)
            if q.node < 0:
                raise ValueError("the clip being asked about is not part of a group")
            self._append([self._entry(q.clip, "split", self._next_answer_id(), group=q.node, tree=self.tree)])

    def undo(self) -> bool:
        """Take back the last answer not yet undone (appending entries that restore what it changed)."""
        with self.lock:
            live = [a for a in self.answers if a not in self.undone]
            if not live:
                return False
            aid = max(live)
            done = self.answers[aid]
            if done[0]["action"] in ("skip", "split"):
                entries = [self._entry(self.by_hash[done[0]["content_hash"]], "undo", aid, undoes=aid)]
            else:
                entries = []
                for e in done:
                    i = self.by_hash[e["content_hash"]]
                    prev = e.get("previous")
                    entries.append(self._entry(i, "relabel" if prev else "remove", aid, undoes=aid, **{
                        "class": prev, "via": "undo", "restores": e.get("previous_via")}))
            for e in entries:
                e.pop("answer")
            self._append(entries)
            self._learn(entries)
            return True

    # ------------------------------------------------------------------------------------------- index ---

    def _learn(self, entries: list[dict]) -> None:
        """Pass label changes to the index in the background, so the next clip starts without waiting."""
        if self._learner is not None:
            changes = [(e["content_hash"], e["action"], e["class"], e["source"], e["label"]) for e in entries
                       if e["action"] in ("add", "relabel", "remove")]
            if changes:
                self._learner.submit(_teach_index, self.index, changes, self.who)

    def wait(self) -> None:
        """Block until the index has learnt every label given so far."""
        if self._learner is not None:
            self._learner.submit(lambda: None).result()

    def _guess(self, i: int) -> dict | None:
        """The index's kNN vote for clip ``i`` (None without an index or when it abstains)."""
        if not self.index:
            return None
        from .identify import Identifier
        from .store import IndexStoreError, read_manifest

        try:
            gen = read_manifest(self.index)["generation"]
            if self._identifier is None or self._identifier.reader.generation != gen:
                if self._identifier is not None:
                    self._identifier.close()
                self._identifier = Identifier.open(self.index)
            audio = load(self.clips[i].path, self._identifier.sample_rate)
            vote = self._identifier.classify_samples(audio.samples, audio.sample_rate)
        except (IndexStoreError, AudioError):
            return None
        return None if vote.klass == "unknown" else {"class": vote.klass, "confidence": vote.confidence}

    # -------------------------------------------------------------------------------------------- view ---

    def progress(self) -> dict:
        lab = self.labels >= 0
        return {"total": len(self.clips), "labelled": int(lab.sum()), "heard": int((lab & ~self.grouped).sum()),
                "skipped": int(self.skipped.sum()), "failed": len(self.failed),
                "counts": {c: int((self.labels == k).sum()) for k, c in enumerate(CLASSES)}}

    def question(self) -> dict:
        """The state the page shows: the clip to play (None when the pool is done), its group or the group label
        it is heard again for (a review), the guess."""
        with self.lock:
            q = self._next()
            out = {"mode": self.mode, "progress": self.progress(), "clip": None, "group": None, "review": None,
                   "guess": None, "can_undo": any(a not in self.undone for a in self.answers)}
            if q is None:
                return out
            c = self.clips[q.clip]
            out["clip"] = {"id": q.clip, "name": c.name, "hash": c.content_hash}
            if q.node >= 0:
                heard = sum(self.labels[i] >= 0 for i in q.checks)
                out["group"] = {"node": q.node, "size": len(q.members), "checks": len(q.checks), "heard": int(heard)}
            if q.review:
                out["review"] = {"labelled": CLASSES[self.labels[q.clip]]}
            out["guess"] = self._guess(q.clip)
            return out

    def close(self) -> None:
        if self._learner is not None:
            self._learner.shutdown(wait=True)
        if self._identifier is not None:
            self._identifier.close()


class StaleAnswer(Exception):
    """An answer named a clip other than the one being asked about."""


def _teach_index(index: str, changes: list[tuple[str, str, str | None, str, str]], who: str) -> None:
    """Add, relabel or remove clips in the index as the label log says (content hash -> track)."""
    from .build import add_to_index, relabel_in_index, remove_from_index
    from .sources import ReferenceSpec
    from .store import IndexReader

    reader = IndexReader(index)
    try:
        tracks = {h: reader.catalog.by_content_hash(h) for h, *_ in changes}
    finally:
        reader.close()
    new = []
    for h, action, klass, source, label in changes:
        t = tracks[h]
        if action == "remove":
            if t is not None:
                remove_from_index(index, [t.id], who=who)
        elif t is None:
            new.append(ReferenceSpec(path=source, label=label, klass=klass))
        elif t.klass != klass:
            relabel_in_index(index, t.id, klass=klass, who=who)
    if new:
        add_to_index(new, index, jobs=1, who=who)
