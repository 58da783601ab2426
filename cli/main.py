"""The ``audioid`` command line: thin shells over the library.

Start-up imports only click and the standard library (``audioid --help`` must stay fast); each command imports
the numeric and index modules it needs when it runs.
"""
from __future__ import annotations

import itertools
import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import click

from audioid import __version__

from .output import FORMATS, make_writer


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="audioid")
def cli() -> None:
    """Identify which reference track plays at the end of broadcast recordings.

    \b
    Start with `audioid demo`, then:
      audioid index build refs/ --index idx
      audioid identify --index idx recordings/
    """
    from audioid.index.heap import steady_heap

    steady_heap()       # batches pay glibc's adaptive thresholds on every file otherwise (index.heap)


# --------------------------------------------------------------------------------------------------- index ---

@cli.group("index")
def index_group() -> None:
    """Build, extend and inspect an index of reference tracks."""


#: The classes of ``audioid.index.catalog.CLASSES``, spelt out: importing the index here would slow every command's
#: start-up (tests/test_cli.py checks that the two agree).
CLASSES = ("music", "dialogue", "both")


def _index_option(f: Callable) -> Callable:
    return click.option("--index", "index_dir", required=True, metavar="DIR",
                        type=click.Path(file_okay=False, dir_okay=True), help="Index directory.")(f)


def _search_options(f: Callable) -> Callable:
    """``--max-speed-change`` and ``--max-tempo-change``: the warps a query is searched at (MatchConfig)."""
    f = click.option("--max-tempo-change", type=click.FloatRange(0, 0.1), default=None, metavar="X",
                     help="Largest tempo change searched with the pitch kept (broadcast time compression), as a "
                          "fraction; 0 searches none, and queries with nothing to find cost less [default: 0.04].")(f)
    return click.option("--max-speed-change", type=click.FloatRange(0, 0.1), default=None, metavar="X",
                        help="Largest playback-speed change searched (pitch moving with it), as a fraction "
                             "[default: 0.03].")(f)


def _match_config(max_speed_change: float | None, max_tempo_change: float | None):
    """The MatchConfig the search options ask for (None: the library's defaults)."""
    given = {k: v for k, v in (("max_speed_change", max_speed_change), ("max_tempo_change", max_tempo_change))
             if v is not None}
    if not given:
        return None
    from audioid.index.identify import MatchConfig

    return MatchConfig(**given)


def _who_option(f: Callable) -> Callable:
    return click.option("--who", default=None, metavar="NAME",
                        help="Name logged with label changes (default: $AUDIOID_USER or the login name).")(f)


def _write_options(f: Callable) -> Callable:
    f = _who_option(f)
    f = click.option("--label-from", type=click.Choice(["stem", "parent"]), default="stem", show_default=True,
                     help="Label of a file found in a folder: its name without extension, or its folder's name.")(f)
    f = click.option("--class", "klass", type=click.Choice(CLASSES), default=None,
                     help="Class of every file of SOURCE for the music / dialogue / both vote (a manifest's own "
                          "class column wins where a row has one).")(f)
    f = click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Analysis processes (default: one per core).")(f)
    f = _index_option(f)
    return click.argument("source", metavar="SOURCE")(f)


@contextmanager
def _progress(total: int, desc: str = "analysing", *, show: bool = True) -> Iterator[Callable | None]:
    """A tqdm bar on stderr when ``show`` and stderr is a terminal; otherwise no progress output at all."""
    if not (show and sys.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="file", desc=desc, file=sys.stderr, leave=False) as bar:
        yield lambda _analysis: bar.update(1)


def _write_index(add: bool, source: str, index_dir: str, jobs: int | None, label_from: str, klass: str | None,
                 who: str | None, from_log: bool = False, vector_index: str | None = None) -> None:
    from audioid.index.build import add_to_index, build_index
    from audioid.index.sources import SourceError, reference_specs
    from audioid.index.store import IndexStoreError

    try:
        specs = reference_specs(source, label_from=label_from, klass=klass)
        with _progress(len(specs)) as tick:
            if add:
                report = add_to_index(specs, index_dir, jobs=jobs, progress=tick, who=who)
            else:
                report = build_index(specs, index_dir, jobs=jobs, progress=tick, who=who, from_log=from_log,
                                     vector_index=vector_index)
    except (SourceError, IndexStoreError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{e.filename or index_dir}: {e.strerror or e}") from None
    lines = [f"{'add' if add else 'build'}: {len(report.added)} added, {len(report.duplicates)} duplicate(s), "
             f"{len(report.failed)} failed; index {index_dir} is at generation {report.generation}"]
    lines += [f"  duplicate  {path} (same file as track {existing})" for path, existing in report.duplicates]
    lines += [f"  failed     {msg if msg.startswith(path) else f'{path}: {msg}'}" for path, msg in report.failed]
    lines += [f"  skipped    {path}: {why}" for path, why in report.skipped]
    click.echo("\n".join(lines), err=True)


@index_group.command("build")
@_write_options
@click.option("--from-log", is_flag=True,
              help="Replay the existing index's label log: its labels win over SOURCE's, removed recordings stay out.")
@click.option("--vector-index", default=None, metavar="FACTORY",
              help="FAISS index_factory string of the embedding store, e.g. SQfp16 (exhaustive, half precision), "
                   "Flat (float32), HNSW32 or IVF1024,Flat for large indexes [default: the replaced index's, "
                   "else SQfp16].")
def index_build(source: str, index_dir: str, jobs: int | None, label_from: str, klass: str | None,
                who: str | None, from_log: bool, vector_index: str | None) -> None:
    """Build (or rebuild) an index from SOURCE.

    SOURCE is a folder (searched recursively), a CSV manifest with columns path,label and optionally
    title,artist,class (other columns are kept as metadata; paths relative to the manifest), or one audio file.
    Unreadable files are listed and skipped. The new index replaces the old one atomically; the old index's
    label log is kept.
    """
    _write_index(False, source, index_dir, jobs, label_from, klass, who, from_log, vector_index)


@index_group.command("add")
@_write_options
def index_add(source: str, index_dir: str, jobs: int | None, label_from: str, klass: str | None,
              who: str | None) -> None:
    """Add the references in SOURCE to an existing index (files already indexed are skipped as duplicates)."""
    _write_index(True, source, index_dir, jobs, label_from, klass, who)


@index_group.command("remove")
@click.argument("refs", nargs=-1, required=True, metavar="TRACK_ID_OR_LABEL...")
@_index_option
@_who_option
def index_remove(refs: tuple[str, ...], index_dir: str, who: str | None) -> None:
    """Remove tracks by id or label; effective for the next query, no rebuild."""
    from audioid.index.build import remove_from_index
    from audioid.index.store import IndexStoreError

    try:
        removed = remove_from_index(index_dir, list(refs), who=who)
    except IndexStoreError as e:
        raise click.ClickException(str(e)) from None
    for t in removed:
        click.echo(f"removed  {t.id}  {t.label}", err=True)


@index_group.command("relabel")
@click.argument("track_id", type=int)
@_index_option
@click.option("--label", default=None, help="New label.")
@click.option("--class", "klass", type=click.Choice(CLASSES), default=None, help="New class.")
@click.option("--title", default=None, help="New title.")
@click.option("--artist", default=None, help="New artist.")
@_who_option
def index_relabel(track_id: int, index_dir: str, label: str | None, klass: str | None, title: str | None,
                  artist: str | None, who: str | None) -> None:
    """Change a track's label, class, title or artist; logged, effective for the next query."""
    from audioid.index.build import relabel_in_index
    from audioid.index.store import IndexStoreError

    try:
        t = relabel_in_index(index_dir, track_id, label=label, klass=klass, title=title, artist=artist, who=who)
    except (IndexStoreError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"relabelled  {t.id}  label={t.label} class={t.klass} title={t.title} artist={t.artist}", err=True)


@index_group.command("log")
@_index_option
def index_log(index_dir: str) -> None:
    """Print the index's label log (who changed which label when), one JSON object per line."""
    import json

    from audioid.index.store import IndexReader, IndexStoreError

    try:
        reader = IndexReader(index_dir)
    except IndexStoreError as e:
        raise click.ClickException(str(e)) from None
    try:
        for entry in reader.catalog.log_entries():
            click.echo(json.dumps(entry))
    finally:
        reader.close()


@index_group.command("report")
@_index_option
@click.option("--batch", type=click.IntRange(min=1), default=50, show_default=True, metavar="N",
              help="Predictions per row of the trend table.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_report(index_dir: str, batch: int, as_json: bool) -> None:
    """Drift report of the music / dialogue / both model.

    Class balance; accuracy of the class predicted for each added track before the index learnt it
    (prequential), per class and over time; abstentions; similarity of new tracks to their nearest labelled
    neighbour. Falling figures mean new material no longer looks like what is labelled.
    """
    from audioid.index.report import drift_report
    from audioid.index.store import IndexStoreError

    try:
        rep = drift_report(index_dir, batch=batch)
    except IndexStoreError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        import json

        click.echo(json.dumps(rep))
        return
    from .output import format_report

    click.echo(format_report(rep))


@index_group.command("compact")
@_index_option
def index_compact(index_dir: str) -> None:
    """Merge the index's segments into one and drop removed tracks for good (same answers, faster queries).

    Adds write one segment each and merge the newer ones now and then by themselves; this merges everything.
    """
    from audioid.index.build import merge_segments
    from audioid.index.store import IndexStoreError

    try:
        gen = merge_segments(index_dir)
    except IndexStoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"compact: index {index_dir} is at generation {gen}", err=True)


@index_group.command("check")
@_index_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_check(index_dir: str, as_json: bool) -> None:
    """Check that the index's manifest, catalog, landmarks, embeddings and label log agree.

    Leftovers of an interrupted write (ignored by readers, removed by the next write) are warnings. Exits 1
    when anything a reader would trust is inconsistent.
    """
    from audioid.index.check import check_index

    rep = check_index(index_dir)
    if as_json:
        import json

        click.echo(json.dumps(rep.to_dict()))
    else:
        click.echo(f"{index_dir}: generation {rep.generation}, {rep.tracks} tracks, {rep.postings:,} landmarks, "
                   f"{rep.vectors:,} embeddings")
        for w in rep.warnings:
            click.echo(f"  warning  {w}")
        for e in rep.errors:
            click.echo(f"  error    {e}")
        click.echo("consistent" if rep.ok else f"INCONSISTENT: {len(rep.errors)} error(s)")
    if not rep.ok:
        sys.exit(1)


@index_group.command("stats")
@_index_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_stats(index_dir: str, as_json: bool) -> None:
    """Tracks and their classes, hashes, hours of audio, size on disk, format version, generation, segments and
    embeddings."""
    from audioid.index.store import IndexReader, IndexStoreError

    try:
        reader = IndexReader(index_dir)
    except IndexStoreError as e:
        raise click.ClickException(str(e)) from None
    try:
        stats = {"index": index_dir, **reader.stats()}
    finally:
        reader.close()
    if as_json:
        import json

        click.echo(json.dumps(stats))
        return
    shown = dict(stats, classes=", ".join(f"{c} {n:,}" for c, n in stats["classes"].items()),
                 hashes=f"{stats['hashes']:,}", vectors=f"{stats['vectors']:,}",
                 hours=f"{stats['hours']:.2f}", size_bytes=f"{stats['size_bytes'] / 1e6:.1f} MB ({stats['size_bytes']:,} bytes)",
                 builtin_examples="built-in and the index's (a class has few labelled tracks)"
                 if stats["builtin_examples"] else "the index's labelled tracks")
    names = {"size_bytes": "size on disk", "format_version": "format version", "hours": "hours of audio",
             "vectors": "embeddings", "vector_index": "vector index", "builtin_examples": "class vote by",
             "created_at": "created", "updated_at": "updated"}
    for key, value in shown.items():
        click.echo(f"{names.get(key, key):<15} {value}")


# ------------------------------------------------------------------------------------------------ identify ---

def _safe_stdout() -> None:
    """Undecodable file names must not crash the output: write them back as the bytes they were."""
    enc = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "")
    try:
        sys.stdout.reconfigure(errors="surrogateescape" if enc == "utf8" else "backslashreplace")
    except (AttributeError, ValueError):
        pass


@cli.command()
@_index_option
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format [default: table on a terminal, jsonl otherwise].")
@click.option("--outro-seconds", type=click.FloatRange(min=0), default=None, metavar="N",
              help="Seconds of sound analysed at the end of each file (trailing silence is read past); "
                   "0 = whole file [default: 10; the whole file with --all-matches].")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Worker processes; output stays in input order [default: this process, joined by one worker "
                   "per core once the batch is long enough to pay for starting them].")
@click.option("--all-matches", is_flag=True, help="One record per track found in each file, with its time range.")
@_search_options
def identify(index_dir: str, paths: tuple[str, ...], fmt: str | None, outro_seconds: float | None,
             jobs: int | None, all_matches: bool, max_speed_change: float | None,
             max_tempo_change: float | None) -> None:
    """Identify the music at the end of each PATH (files, or folders searched recursively).

    Prints one record per input file in input order (with --all-matches, one per track found): path, status
    (match / no_match / error), label, title, artist, track_id, score, confidence, offset_s, speed, pitch,
    query_start_s, query_end_s, class, class_confidence, neighbours, error. A file that cannot be read gets an
    error record and the batch goes on.

    Exit status: 0 when every file got a record (error records included), 1 when the index cannot be opened or
    no audio file was found, 2 on usage errors.
    """
    import audioid
    from audioid.index.result import FIELDS
    from audioid.index.sources import expand_inputs
    from audioid.index.store import IndexStoreError

    files: list[str] = []
    for p in paths:
        found = expand_inputs([p])
        if not found:
            click.echo(f"warning: {p}: no audio files found", err=True)
        files.extend(found)
    if not files:
        raise click.ClickException("no audio files to identify")
    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    _safe_stdout()
    results = audioid.iter_identify(index_dir, files, outro_seconds=outro_seconds, all_matches=all_matches,
                                    jobs=jobs, config=_match_config(max_speed_change, max_tempo_change))
    try:
        first = next(results)      # a missing or foreign index is reported before any output
    except IndexStoreError as e:
        raise click.ClickException(str(e)) from None
    writer = make_writer(fmt, sys.stdout, FIELDS, path_width=max(len(f) for f in files))
    # Records on a terminal show the progress themselves; written to a file or a pipe, a bar on stderr does.
    try:
        with _progress(len(files), "identifying", show=not sys.stdout.isatty()) as tick:
            for _path, records in itertools.chain([first], results):
                for r in records:
                    writer.write(r.to_dict())
                if tick:
                    tick(records)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, without a traceback or a second error at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        results.close()
        sys.exit(1)


# --------------------------------------------------------------------------------------------------- serve ---

@cli.command()
@_index_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default; 0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, metavar="N",
              help="Requests handled at once (per worker).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Server processes sharing the port, each with --threads threads: one per core serves that many "
                   "identifies in parallel (threads of one process take turns on Python's GIL) "
                   "[default: one per core this process may use].")
@click.option("--token", envvar="AUDIOID_TOKEN", default=None, metavar="TOKEN",
              help="Bearer token the write endpoints require [env AUDIOID_TOKEN; default: none].")
@click.option("--token-all", is_flag=True, help="Require the token on read endpoints too (not /health, /openapi.json).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50, show_default=True,
              metavar="MB", help="Largest request body.")
@click.option("--client-timeout", type=click.IntRange(min=1), default=120, show_default=True, metavar="S",
              help="Close a connection that sends nothing for S seconds (a stalled or idle client).")
@_search_options
def serve(index_dir: str, host: str, port: int, threads: int, workers: int | None, token: str | None,
          token_all: bool, max_upload_mb: float, client_timeout: int, max_speed_change: float | None,
          max_tempo_change: float | None) -> None:
    """Serve the HTTP API (identify, tracks, stats; GET /openapi.json) on waitress until interrupted.

    The index need not exist yet (503 until the first build). Builds, adds and label changes made while it runs,
    by this server or by other processes, are picked up without a restart.
    """
    if token_all and not token:
        raise click.UsageError("--token-all needs --token (or AUDIOID_TOKEN)")
    from audioid.api import create_app, make_server
    from audioid.api.workers import listen_socket, serve_workers
    from audioid.index.parallel import usable_cores

    workers = workers or usable_cores()
    config = dict(token=token, token_all=token_all, max_upload_mb=max_upload_mb, client_timeout_s=client_timeout,
                  match_config=_match_config(max_speed_change, max_tempo_change))
    app = create_app(index_dir, **config) if workers == 1 else None  # workers make their own
    try:
        sock = listen_socket(host, port)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}")
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"serving {index_dir} on http://{shown}:{bound_port} "
               f"({workers} worker{'s' if workers > 1 else ''}; Ctrl-C stops)", err=True)
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("warning: no --token: anyone who can reach this address can change the index", err=True)
    if workers > 1:
        sys.exit(serve_workers(sock, index_dir, config, workers=workers, threads=threads,
                               log=lambda line: click.echo(line, err=True)))
    import signal

    # SIGTERM (a service manager's stop) exits like Ctrl-C, so the upload folder and readers are cleaned up.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
    make_server(app, threads=threads, sock=sock).run()


# ---------------------------------------------------------------------------------------------------- demo ---

@cli.command()
@click.option("--keep", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write the demo's references, index and queries to DIR and keep them.")
def demo(keep: str | None) -> None:
    """Synthesize a few tracks, index them, and identify degraded broadcast-like excerpts.

    Runs in a few seconds with no input of yours: a check that the installation works and a tour of what
    identify reports. Exits 1 if any excerpt is not identified as expected.
    """
    from .demo import run_demo

    if not run_demo(keep):
        sys.exit(1)


from .labelling import chunk, label  # noqa: E402  (registered last: they use helpers defined above)

cli.add_command(chunk)
cli.add_command(label)
