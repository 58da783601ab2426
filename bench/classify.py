"""Music / dialogue / both on the real corpus: cross-validated and prequential accuracy of the index's kNN vote.

The clip set is ``bench/fit_embedding_stats.py``'s: 10 s *music* clips, *dialogue* clips and *both* clips
(dialogue over music at a music-to-speech power ratio from -12 to +6 dB).  Every clip is classified the way the
index classifies an outro: raw vector from :func:`embed`, the shipped transform (:func:`default_standardizer`),
a FAISS vector segment (:func:`build_faiss`, :func:`search_segments`) whose ids pack a reference "track" (a source
file: its clips are its windows) and a window number, and the product's vote (:func:`audioid.index.classify
.classify`, default :class:`ClassifyConfig` unless overridden).

* **Cross-validated**: source packages are split into folds (``--folds``); each fold's clips are classified
  against references from the other folds' packages only, so no test clip shares a package (composer, game,
  voice, recording chain) with a reference.  *both* clips mix speech and music of one fold.  Figures are also
  given for the clips whose packages the shipped transform never saw (not in ``TUNING_PACKAGES``).
* **Prequential**: all clips arrive one at a time in a random order; each is predicted by the kNN over the clips
  labelled so far, then added with its label (what the index's drift report measures).  Accuracy is reported by
  how many labels the index held, averaged over ``--orders`` random orders.
* ``--query-chain air``: the cross-validated run with every *test* clip passed through a station's air chain
  (:func:`audioid.synth.air_chain`: EQ, fast multiband compression, a clipper) while the references stay as
  recorded: how the vote holds up on broadcast captures of material that was indexed clean.
* ``--dims 32,48,64,96,0``: cross-validated figures with transforms fitted on the tuning packages at each
  projection size (0: no projection), to choose the shipped ``out_dim``.
* ``--index-classes music``: the cross-validated run with references of those classes only (an index of songs
  alone; ``,``: no labelled reference at all).  As in the index, built-in examples
  (:mod:`audioid.index.examples`) vote too while the references hold fewer than ``examples_below`` labelled
  tracks of some class (``--examples-below 0``: never); the package's are drawn from every package's clips,
  so here each fold's are drawn the same way from the other folds' clips.

Usage::

    OPENBLAS_NUM_THREADS=1 python bench/classify.py [--partition-seed 1] [--dims 32,48,64,96,0]
    OPENBLAS_NUM_THREADS=1 python bench/classify.py --index-classes music [--examples-below 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fit_embedding_stats import (CORPUS, TUNING_PACKAGES, Example, builtin_examples, embed_examples,  # noqa: E402
                                 load_clips, make_examples, tuning_examples)

from audioid import synth  # noqa: E402
from audioid.fingerprint.embedding import EmbeddingConfig, Standardizer, default_standardizer  # noqa: E402
from audioid.index.classify import CLASSES, UNKNOWN, ClassifyConfig, classify  # noqa: E402
from audioid.index.examples import Examples, examples_vote, from_records  # noqa: E402
from audioid.index.vectors import WINDOW_BITS, VectorSegment, build_faiss, search_segments, track_of  # noqa: E402

LABELS = CLASSES + (UNKNOWN,)


def partition(packages: list[str], n_folds: int, seed: int) -> dict[str, int]:
    """Package -> fold, packages shuffled by ``seed`` then dealt round robin (seed 0: sorted order)."""
    order = sorted(packages)
    if seed:
        order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    return {p: i % n_folds for i, p in enumerate(order)}


def fold_examples(clips, n_folds: int, partition_seed: int, mix_seed: int) -> tuple[list[Example], np.ndarray]:
    """Examples and their folds; music and speech packages are partitioned separately, so every fold has both,
    and *both* clips mix speech and music of one fold."""
    fold_of = {}
    for kind in ("music", "dialogue"):
        fold_of.update(partition(sorted({c.package for c in clips if c.kind == kind}), n_folds, partition_seed))
    rng = np.random.default_rng(mix_seed)
    examples, folds = [], []
    for f in range(n_folds):
        ex = make_examples([c for c in clips if fold_of[c.package] == f], rng)
        examples += ex
        folds += [f] * len(ex)
    return examples, np.array(folds)


def window_ids(examples: list[Example]) -> np.ndarray:
    """Vector id of each example: its group (source file or mix) is the track, its rank in the group the window."""
    track: dict[str, int] = {}
    windows: dict[str, int] = {}
    ids = np.empty(len(examples), np.int64)
    for i, e in enumerate(examples):
        t = track.setdefault(e.group, len(track) + 1)
        ids[i] = (t << WINDOW_BITS) | windows.get(e.group, 0)
        windows[e.group] = windows.get(e.group, 0) + 1
    return ids


def vote(segments: list[VectorSegment], queries: np.ndarray, class_of: dict[int, str], cfg: ClassifyConfig,
         examples: Examples | None = None) -> list[str]:
    """The product's class vote for each query vector; built-in ``examples`` vote too where an index holding the
    references of ``class_of`` would let them (:func:`audioid.index.examples.examples_vote`)."""
    sims, ids = search_segments(segments, queries, cfg.fetch)
    labelled = {c: sum(1 for k in class_of.values() if k == c) for c in CLASSES}
    if examples is None or not examples_vote(labelled, cfg.examples_below):
        near = [[]] * len(queries)
    else:
        near = examples.nearest(queries, cfg.k)
    return [classify(sims[i], ids[i], class_of, cfg, near[i]).klass for i in range(len(queries))]


def cross_validate(vecs: np.ndarray, ids: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                   cfg: ClassifyConfig, factory: str = "Flat", queries: np.ndarray | None = None,
                   index_classes: tuple[str, ...] = CLASSES, examples: list[Example] | None = None) -> np.ndarray:
    """Predicted label of every example by the references of the other folds of ``index_classes`` (the
    example's own vector, or its row of ``queries`` when given, is the query).  Given the ``examples`` behind
    ``vecs``, built-in examples drawn from the other folds' as the package's are drawn from all
    (:func:`fit_embedding_stats.builtin_examples`) vote where the index would let them."""
    queries = vecs if queries is None else queries
    preds = np.empty(len(vecs), object)
    tracks = track_of(ids)
    for f in np.unique(folds):
        ref, test = (folds != f) & np.isin(labels, index_classes), folds == f
        seg = VectorSegment(f"fold{f}", build_faiss(vecs[ref], ids[ref], factory))
        class_of = dict(zip(tracks[ref].tolist(), labels[ref].tolist()))
        builtin = None
        if examples is not None:
            others = np.flatnonzero(folds != f)
            builtin = from_records(builtin_examples([examples[i] for i in others], vecs[others])[0])
        preds[test] = vote([seg], queries[test], class_of, cfg, builtin)
    return preds


def prequential(vecs: np.ndarray, ids: np.ndarray, labels: np.ndarray, order: np.ndarray,
                cfg: ClassifyConfig) -> np.ndarray:
    """Predicted label of each example, in arrival ``order``, by the examples labelled before it."""
    preds = np.empty(len(order), object)
    preds[0] = UNKNOWN
    seg = VectorSegment("online", build_faiss(vecs[order[:1]], ids[order[:1]], "Flat"))
    tracks = track_of(ids).tolist()
    class_of = {tracks[order[0]]: labels[order[0]]}
    for n, i in enumerate(order[1:], start=1):
        preds[n] = vote([seg], vecs[i:i + 1], class_of, cfg)[0]
        seg.index.add_with_ids(vecs[i:i + 1], ids[i:i + 1])
        class_of[tracks[i]] = labels[i]
    return preds


def f1(y: np.ndarray, p: np.ndarray, classes) -> float:
    """Macro-F1 over ``classes``."""
    out = []
    for c in classes:
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        out.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(out))


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    """Accuracy and macro-F1 of the answered examples (3 classes, and music present vs dialogue), the
    abstention rate and the confusion matrix (rows: truth; columns: ``LABELS``, abstentions last)."""
    ans = p != UNKNOWN
    ya, pa = y[ans], p[ans]
    yb, pb = np.where(ya == "dialogue", "dialogue", "music"), np.where(pa == "dialogue", "dialogue", "music")
    conf = np.array([[np.sum((y == t) & (p == c)) for c in LABELS] for t in CLASSES])
    return {"n": len(y), "abstain": float(1 - ans.mean()), "bin_acc": float(np.mean(yb == pb)),
            "bin_f1": f1(yb, pb, ("music", "dialogue")), "acc3": float(np.mean(ya == pa)),
            "f1_3": f1(ya, pa, CLASSES), "conf": conf}


def _row(name: str, s: dict) -> str:
    return (f"| {name} | {s['n']} | {s['bin_acc']:.4f} | {s['bin_f1']:.4f} | {s['acc3']:.4f} | {s['f1_3']:.4f} | "
            f"{100 * s['abstain']:.1f} % |")


HEADER = ("| clips | n | binary acc | binary macro-F1 | 3-class acc | 3-class macro-F1 | abstained |\n"
          "|---|---|---|---|---|---|---|")


def report_cv(examples: list[Example], folds: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> None:
    print(HEADER)
    for f in np.unique(folds):
        pk = sorted({p for e, g in zip(examples, folds) if g == f for p in e.packages})
        print(_row(f"fold {f} ({', '.join(pk)})", scores(labels[folds == f], preds[folds == f])))
    unseen = np.array([not set(e.packages) & TUNING_PACKAGES for e in examples])
    print(_row("packages the transform never saw", scores(labels[unseen], preds[unseen])))
    pooled = scores(labels, preds)
    print(_row("**all (pooled)**", pooled))
    print("\nPooled confusion matrix (rows = truth, columns = prediction):\n")
    print("| truth \\ predicted | " + " | ".join(LABELS) + " |")
    print("|---|" + "---|" * len(LABELS))
    for t, row in zip(CLASSES, pooled["conf"]):
        print(f"| {t} | " + " | ".join(str(v) for v in row) + " |")
    ratios = np.array([e.ratio_db for e in examples])
    print("\n*both* clips by music-to-speech ratio, share predicted both / music / dialogue / abstained:\n")
    print("| ratio (dB) | clips | both | music | dialogue | abstained |")
    print("|---|---|---|---|---|---|")
    for lo in range(-12, 6, 3):
        sel = (labels == "both") & (ratios >= lo) & (ratios < lo + 3)
        share = [np.mean(preds[sel] == c) for c in ("both", "music", "dialogue", UNKNOWN)]
        print(f"| {lo:+d} to {lo + 3:+d} | {int(sel.sum())} | " + " | ".join(f"{100 * v:.0f} %" for v in share)
              + " |")


def report_prequential(vecs: np.ndarray, ids: np.ndarray, labels: np.ndarray, cfg: ClassifyConfig,
                       n_orders: int, cv: dict, bin_size: int = 300) -> None:
    """Accuracy by arrivals, averaged over random orders; 'after 50 per class' starts at the first arrival
    that finds at least 50 labels of every class in the index."""
    bins: dict[int, list[dict]] = {}
    after50, end = [], []
    for seed in range(n_orders):
        order = np.random.default_rng(1000 + seed).permutation(len(vecs))
        y = labels[order]
        p = prequential(vecs, ids, labels, order, cfg)
        held = np.stack([np.concatenate([[0], np.cumsum(y == c)[:-1]]) for c in CLASSES])   # labels before each
        t50 = int(np.argmax(held.min(axis=0) >= 50))
        after50.append(scores(y[t50:], p[t50:]) | {"t50": t50})
        end.append(scores(y[-bin_size:], p[-bin_size:]))
        for b in range(0, len(y), bin_size):
            bins.setdefault(b, []).append(scores(y[b:b + bin_size], p[b:b + bin_size]))

    def mean(rows: list[dict], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    print(f"Prequential, {n_orders} random orders of all {len(vecs)} clips (mean over orders):\n")
    print("| arrivals | binary acc | 3-class acc | 3-class macro-F1 | abstained |")
    print("|---|---|---|---|---|")
    for b, rows in sorted(bins.items()):
        print(f"| {b + 1}-{min(b + bin_size, len(vecs))} | {mean(rows, 'bin_acc'):.4f} | {mean(rows, 'acc3'):.4f} | "
              f"{mean(rows, 'f1_3'):.4f} | {100 * mean(rows, 'abstain'):.1f} % |")
    print("\n| phase | binary acc | 3-class acc | 3-class macro-F1 | abstained |\n|---|---|---|---|---|")
    print(f"| from 50 labels per class (arrival ~{mean(after50, 't50'):.0f}) to the end | "
          f"{mean(after50, 'bin_acc'):.4f} | {mean(after50, 'acc3'):.4f} | {mean(after50, 'f1_3'):.4f} | "
          f"{100 * mean(after50, 'abstain'):.1f} % |")
    print(f"| last {bin_size} arrivals | {mean(end, 'bin_acc'):.4f} | {mean(end, 'acc3'):.4f} | "
          f"{mean(end, 'f1_3'):.4f} | {100 * mean(end, 'abstain'):.1f} % |")
    print(f"| cross-validated (by package) | {cv['bin_acc']:.4f} | {cv['acc3']:.4f} | {cv['f1_3']:.4f} | "
          f"{100 * cv['abstain']:.1f} % |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--partition-seed", type=int, default=0, help="package partition (0: sorted round robin)")
    ap.add_argument("--mix-seed", type=int, default=0, help="music partners and ratios of the 'both' clips")
    ap.add_argument("--orders", type=int, default=5, help="random arrival orders of the prequential run")
    ap.add_argument("--dims", help="comma-separated projection sizes to compare (0: none); skips the prequential run")
    ap.add_argument("--query-chain", choices=["air"], help="pass the test clips through synth.air_chain; "
                    "cross-validated run only")
    ap.add_argument("--factory", default="Flat", help="FAISS index_factory string of the reference segments")
    ap.add_argument("-k", type=int, help="override ClassifyConfig.k")
    ap.add_argument("--sharpness", type=float, help="override ClassifyConfig.sharpness")
    ap.add_argument("--min-share", type=float, help="override ClassifyConfig.min_share")
    ap.add_argument("--min-similarity", type=float, help="override ClassifyConfig.min_similarity")
    ap.add_argument("--examples-below", type=int, help="override ClassifyConfig.examples_below (0: the built-in "
                    "examples never vote)")
    ap.add_argument("--index-classes", default=",".join(CLASSES),
                    help="classes the references hold (e.g. 'music': an index of songs alone); cross-validated "
                    "run only")
    args = ap.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    cfg = EmbeddingConfig()
    vote_cfg = replace(ClassifyConfig(), **{k: v for k, v in (("k", args.k), ("sharpness", args.sharpness),
                                                               ("min_share", args.min_share),
                                                               ("min_similarity", args.min_similarity),
                                                               ("examples_below", args.examples_below))
                                             if v is not None})
    index_classes = tuple(c for c in args.index_classes.split(",") if c)
    if not set(index_classes) <= set(CLASSES):
        ap.error(f"--index-classes takes classes among {', '.join(CLASSES)}")
    clips = load_clips(args.corpus, cfg.sample_rate)
    examples, folds = fold_examples(clips, args.folds, args.partition_seed, args.mix_seed)
    t0 = time.perf_counter()
    raw = embed_examples(examples, cfg)
    ms_per_clip = 1000 * (time.perf_counter() - t0) / len(examples)
    labels = np.array([e.label for e in examples], object)
    ids = window_ids(examples)
    counts = {c: int(np.sum(labels == c)) for c in CLASSES}
    print(f"## Music / dialogue / both (embedding v{cfg.version}, {raw.shape[1]} raw dims)\n")
    print(f"Clips: {counts}; {args.folds} folds by source package (partition seed {args.partition_seed}, mix seed "
          f"{args.mix_seed}); vote {vote_cfg}; references in FAISS {args.factory!r}.\n")

    if args.dims:
        _, fit_raw = tuning_examples(args.corpus, cfg)
        print("| dims | " + HEADER.split("\n")[0][2:] + "\n|---" + HEADER.split("\n")[1])
        for d in (int(v) for v in args.dims.split(",")):
            st = Standardizer.fit(fit_raw, cfg, out_dim=d or None)
            s = scores(labels, cross_validate(st.transform(raw), ids, labels, folds, vote_cfg, args.factory))
            print(f"| {st.out_dim} " + _row("all (pooled)", s))
        return 0

    st = default_standardizer(cfg)
    vecs = st.transform(raw)
    if args.query_chain:
        chained = [replace(e, samples=synth.air_chain(e.samples, cfg.sample_rate)) for e in examples]
        queries = st.transform(embed_examples(chained, cfg))
        print(f"Test clips through the air chain; references as recorded. Shipped transform: {st.dim} -> "
              f"{st.out_dim} dims.\n")
        report_cv(examples, folds, labels, cross_validate(vecs, ids, labels, folds, vote_cfg, args.factory,
                                                          queries))
        return 0
    preds = cross_validate(vecs, ids, labels, folds, vote_cfg, args.factory, index_classes=index_classes,
                           examples=examples)
    print(f"Shipped transform: {st.dim} -> {st.out_dim} dims.\n")
    if index_classes != CLASSES:
        print(f"References of {', '.join(index_classes) or 'no class (none labelled)'} only; built-in examples drawn "
              "from the other folds' clips as the package's are from all (bench/fit_embedding_stats.py).\n")
        report_cv(examples, folds, labels, preds)
        return 0
    report_cv(examples, folds, labels, preds)
    print()
    report_prequential(vecs, ids, labels, vote_cfg, args.orders, scores(labels, preds))
    print(f"\nEmbedding: {ms_per_clip:.2f} ms per 10 s clip on one core ({len(examples)} clips).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
