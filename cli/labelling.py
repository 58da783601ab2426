"""``audioid chunk`` and ``audioid label``: cut recordings into clips, label them in the browser, export the labels.

Imports only click at start-up (``audioid --help`` stays fast); each command imports what it needs when it runs.
"""
from __future__ import annotations

import click

# index.chunking.FORMATS's keys, repeated here so that --help needs no numeric import.
CHUNK_FORMATS = ("wav", "flac", "ogg", "mp3")
MODES = ("guided", "uncertain", "random")


@click.command("chunk")
@click.argument("source", type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              metavar="S", help="Length of each piece.")
@click.option("--keep-short", is_flag=True, help="Keep the leftover piece at the start of a file (shorter than S).")
@click.option("--format", "fmt", type=click.Choice(CHUNK_FORMATS), default="wav", show_default=True,
              help="Format of the pieces.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes (default: one per core).")
@click.option("--summary", is_flag=True, help="Also print the totals of every run recorded in OUT.")
def chunk(source: str, out: str, seconds: float, keep_short: bool, fmt: str, jobs: int | None,
          summary: bool) -> None:
    """Cut every audio file under SOURCE into pieces in OUT, from the end towards the start.

    <stem>_chunk_1 is the last piece (the outro), _chunk_2 the one before, and so on; pieces keep their file's
    sub-folder. OUT/chunked.jsonl records each file by content hash: files already chunked are skipped (even
    renamed), changed files are redone, failures are listed with their reasons.
    """
    from audioid.index.chunking import ChunkOptions, chunk_folder
    from audioid.index.chunking import summary as chunk_summary
    from audioid.index.sources import expand_inputs

    from .main import _progress      # imported here: main imports this module

    with _progress(len(expand_inputs([source])), "chunking") as tick:
        report = chunk_folder(source, out, ChunkOptions(seconds, keep_short, fmt), jobs=jobs, progress=tick)
    done = report.of("done")
    lines = [f"chunk: {len(done)} file(s) cut into {sum(len(r.chunks) for r in done)} piece(s) "
             f"({report.audio_seconds / 3600:.2f} h of audio), {len(report.of('skipped'))} already done, "
             f"{len(report.of('failed'))} failed"]
    lines += [f"  failed  {r.error}" for r in report.of("failed")]
    click.echo("\n".join(lines), err=True)
    if summary:
        totals = chunk_summary(out)
        click.echo(f"{out}: {totals['files_done']} file(s) chunked, {totals['files_failed']} failed, "
                   f"{totals['chunks']} piece(s), {totals['hours']:.2f} h")
    if not report.results:
        raise click.ClickException(f"{source}: no audio files found")


def _pool_option(f):
    return click.option("--pool", required=True, metavar="DIR", type=click.Path(exists=True, file_okay=False),
                        help="Folder of clips to label (e.g. `audioid chunk` output).")(f)


def _log_option(f):
    return click.option("--log", "log_path", default=None, metavar="FILE",
                        help="Label log (JSON lines) [default: POOL/labels.jsonl].")(f)


@click.group("label", invoke_without_command=True)
@click.option("--pool", metavar="DIR", type=click.Path(exists=True, file_okay=False),
              help="Folder of clips to label (e.g. `audioid chunk` output).")
@_log_option
@click.option("--index", "index_dir", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="Index that learns each label on the spot and pre-selects its kNN guess.")
@click.option("--mode", type=click.Choice(MODES), default="guided", show_default=True,
              help="Order of the clips: guided (hierarchical cluster-guided, one answer can label a group), "
                   "uncertain (least confident kNN vote first) or random.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8081, show_default=True)
@click.option("--who", default=None, metavar="NAME",
              help="Name logged with each label (default: $AUDIOID_USER or the login name).")
@click.pass_context
def label(ctx: click.Context, pool: str | None, log_path: str | None, index_dir: str | None, mode: str, host: str,
          port: int, who: str | None) -> None:
    """Label clips in the browser: serve the labelling page for --pool.

    \b
    Keys: M music, D dialogue, B both, S skip, X mixed group, U undo, R replay,
    arrows seek 2 s, space pause, [ ] speed 0.5-2x.
    Every answer is appended to the label log; the page resumes where it stopped.
    """
    if ctx.invoked_subcommand:
        return
    if not pool:
        raise click.UsageError("--pool is required")
    from audioid.api.labelling import create_label_app, serve_label_app

    try:
        app = create_label_app(pool, index_dir, log=log_path, mode=mode, who=who)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    session = app.config["label_session"]
    for name, err in session.failed:
        click.echo(f"  failed  {err if err.startswith(name) else f'{name}: {err}'}", err=True)
    p = session.progress()
    click.echo(f"label: {p['total']} clips, {p['labelled']} labelled; log {session.log_path}; "
               f"open http://{host}:{port}/ (Ctrl-C stops)", err=True)
    try:
        serve_label_app(app, host, port)
    finally:
        session.close()


@label.command("export")
@_pool_option
@_log_option
@click.option("--out", "out_path", required=True, metavar="CSV", help="Manifest to write (path,label,class).")
def label_export(pool: str, log_path: str | None, out_path: str) -> None:
    """Write the label log's latest class of every clip as a manifest that `audioid index build` reads."""
    import os

    from audioid.index.labelling import LOG_NAME, export_manifest

    log_path = log_path or os.path.join(pool, LOG_NAME)
    if not os.path.exists(log_path):
        raise click.ClickException(f"{log_path}: no label log")
    n = export_manifest(log_path, out_path)
    click.echo(f"export: {n} labelled clip(s) written to {out_path}", err=True)
