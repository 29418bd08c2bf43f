"""Commands that serve the data: prepare a corpus, convert files, check the reader and writer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import fail, handled, log, print_json_last

check_app = typer.Typer(no_args_is_help=True, help="Corpus-wide checks of the reader and writer.")


@handled
def prepare(
    corpus: str = typer.Option("folk", "--corpus", "-c",
                               help="A corpus name (see corpora/) or a folder, file or glob of tunes."),
    print_split: Optional[str] = typer.Option(None, "--print-split",
                                              help="Write the canonical tunes of one split "
                                                   "(train, valid, test) to stdout."),
    transpose: str = typer.Option("none", "--transpose",
                                  help="none | C (every tune to tonic C, as folk-rnn) | all "
                                       "(train tunes in all 12 keys)."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes (0: all cores)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild even when a cache exists."),
    json_out: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
):
    """Parse, canonicalize, deduplicate and split a corpus; print its statistics."""
    from .. import corpus as corpus_mod

    if print_split is not None and print_split not in corpus_mod.SPLITS:
        fail(f"--print-split must be one of {', '.join(corpus_mod.SPLITS)}, not {print_split!r}")
    prepared = corpus_mod.prepare(corpus, transpose=transpose, jobs=jobs,
                                  use_cache=not no_cache, progress=print_split is None)
    if print_split is not None:
        out = sys.stdout
        for i, t in enumerate(prepared.split(print_split), 1):
            out.write(corpus_mod.book_entry(t, i))
            out.write("\n")
        return
    if json_out:
        import json

        print(json.dumps(prepared.stats, indent=1, sort_keys=True))
    else:
        print(corpus_mod.format_stats(prepared.stats))


@handled
def convert(
    inputs: List[str] = typer.Argument(..., help="ABC, MIDI or MusicXML files, folders or globs."),
    to: Optional[str] = typer.Option(None, "--to", help="Output format: abc, mid, musicxml or mxl "
                                                        "[from -o's extension, else abc]."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write everything to FILE."),
    outdir: Optional[Path] = typer.Option(None, "-O", "--outdir",
                                          help="Write each input to DIR/<stem>.<ext>."),
    grid: str = typer.Option("1/16", "--grid", help="MIDI in: shortest note of the quantization grid."),
    triplets: bool = typer.Option(True, "--triplets/--no-triplets", help="MIDI in: allow triplet beats."),
    track: Optional[int] = typer.Option(None, "--track", help="MIDI in: the track to read (default: the melody)."),
    all_tracks: bool = typer.Option(False, "--all-tracks", help="MIDI in: every track as a voice."),
    meter: Optional[str] = typer.Option(None, "--meter", help="MIDI in: the meter, e.g. 6/8 (default: "
                                                             "the file's, else detected)."),
    repeats: bool = typer.Option(True, "--repeats/--no-repeats",
                                 help="MIDI in: write a section played twice once, with repeat marks "
                                      "and endings (default), or every bar as played."),
    expand_repeats: bool = typer.Option(True, "--expand-repeats/--no-expand-repeats",
                                        help="MIDI out: play repeats and endings out (default), "
                                             "or every note once, as written."),
):
    """Convert tunes between ABC, MIDI and MusicXML; ABC out is canonical ABC."""
    from .. import convert as convert_mod

    if output is not None and outdir is not None:
        fail("give -o FILE or -O DIR, not both")
    midi_options = dict(grid=grid, triplets=triplets, track=track, all_tracks=all_tracks, meter=meter,
                        repeats=repeats)
    try:
        failures = convert_mod.convert(inputs, to=to, output=output, outdir=outdir, log=log,
                                       midi_options=midi_options, expand_repeats=expand_repeats)
    except convert_mod.ConvertFailed as e:  # nothing converted: bad input, exit 2
        log(f"abcgen: {len(e.failures)} failure(s):")
        for f in e.failures:
            log(f"  {f}")
        fail(str(e), 2)
    if failures:
        log(f"abcgen: {len(failures)} failure(s):")
        for f in failures:
            log(f"  {f}")
        raise typer.Exit(1)


@check_app.command("roundtrip")
@handled
def check_roundtrip(
    corpus: str = typer.Option("folk", "--corpus", "-c", help="Corpus name or path."),
    limit: int = typer.Option(0, "--limit", help="Check only the first N tunes (0: all)."),
    abc2midi: bool = typer.Option(True, "--abc2midi/--no-abc2midi",
                                  help="Cross-check the canonical tunes with abc2midi."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes (0: all cores)."),
    json_out: bool = typer.Option(False, "--json", help="Last line of stdout: the figures as JSON."),
):
    """parse(write(parse(abc))) against parse(abc) over a corpus, and abc2midi's reading."""
    from .. import roundtrip

    report = roundtrip.run(corpus, limit=limit, use_abc2midi=abc2midi, jobs=jobs, log=log)
    print(roundtrip.format_report(report))
    if json_out:
        print_json_last(report["summary"])


@check_app.command("played")
@handled
def check_played(
    path: Optional[str] = typer.Argument(None, help="A tune book or folder of .abc files (else --corpus)."),
    corpus: str = typer.Option("folk", "--corpus", "-c", help="Corpus name or path."),
    limit: int = typer.Option(0, "--limit", help="Tunes to check, spread evenly (0: all)."),
    reader: str = typer.Option("abcgen", "--reader", help="abcgen (ours) or music21 (for comparison)."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes (0: all cores)."),
    json_out: bool = typer.Option(False, "--json", help="Last line of stdout: the figures as JSON."),
):
    """Source, canonical text and our reading, all played: the same notes as abc2midi plays?"""
    from .. import played

    if reader not in ("abcgen", "music21"):
        fail("--reader must be abcgen or music21")
    if limit < 0:
        fail("--limit must not be negative")
    report = played.run(path or corpus, limit=limit, jobs=jobs, reader=reader)
    print(played.format_report(report))
    if json_out:
        print_json_last(report["summary"])


@check_app.command("midi-roundtrip")
@handled
def check_midi_roundtrip(
    corpus: str = typer.Option("folk", "--corpus", "-c", help="Corpus name or path."),
    limit: int = typer.Option(1000, "--limit", help="Tunes to measure, spread evenly over the corpus (0: all)."),
    grid: str = typer.Option("1/16", "--grid", help="Quantization grid of the MIDI import."),
    triplets: bool = typer.Option(True, "--triplets/--no-triplets", help="Allow triplet beats."),
    jitter: float = typer.Option(0.0, "--jitter", help="Move every note-on/off by up to MS milliseconds."),
    midi2abc: bool = typer.Option(True, "--midi2abc/--no-midi2abc",
                                  help="Measure midi2abc (Debian abcmidi) on the same files."),
    repeats: bool = typer.Option(True, "--repeats/--no-repeats", help="Recover repeats in the MIDI import."),
    abc2midi: bool = typer.Option(False, "--abc2midi", help="Also play abcgen's ABC with abc2midi and compare."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes (0: all cores)."),
    json_out: bool = typer.Option(False, "--json", help="Last line of stdout: the figures as JSON."),
):
    """ABC -> MIDI -> ABC over corpus tunes: tunes and notes exact, files/s, beside midi2abc."""
    from .. import midi_check

    if limit < 0 or jitter < 0:
        fail("--limit and --jitter must not be negative")
    report = midi_check.run(corpus, limit=limit, grid=grid, triplets=triplets, jitter=jitter,
                            use_midi2abc=midi2abc, jobs=jobs, log=log, repeats=repeats,
                            use_abc2midi=abc2midi)
    print(midi_check.format_report(report))
    if json_out:
        print_json_last(report["summary"])
