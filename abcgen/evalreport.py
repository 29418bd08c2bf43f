"""``abcgen evaluate -O REPORT_DIR``: the figures as Markdown with PNG histograms.

REPORT_DIR gets ``report.md``, ``report.json`` (every figure, as ``--json``
prints it) and one PNG per histogram, the tunes' shares beside the reference
corpus's.  Every file is written atomically, ``report.md`` last, so a reader
that sees it sees its plots.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from .fileio import atomic_write_bytes, atomic_write_text
from .tunestats import FORM_ROWS, HISTOGRAMS

TITLES = {
    "meter": "Meter (M:)", "key": "Key (K:)", "pitch_class": "Pitch class of each note",
    "pitch": "Pitch of each note (MIDI number)", "span": "Pitch span per tune (semitones)",
    "interval": "Melodic interval (semitones, -12..12 shown)", "bars": "Tune length (bars, 4-bar bins)",
    "repeats": "Repeat signs per tune", "parts": "Parts (sections) per tune",
}
_PC = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_TOP = 12


def _bins(name: str, h: dict, ref: dict) -> tuple[list[str], list[float], list[float]]:
    """Labels and the two share lists (in %) of one plot."""
    def shares(d):
        n = sum(d.values()) or 1
        return {k: 100 * v / n for k, v in d.items()}

    a, b = shares(h), shares(ref)
    if name in ("meter", "key"):
        keys = sorted(set(a) | set(b), key=lambda k: -(a.get(k, 0) + b.get(k, 0)))
        top, rest = keys[:_TOP], keys[_TOP:]
        labels = list(top) + (["other"] if rest else [])
        return (labels, [a.get(k, 0) for k in top] + ([sum(a.get(k, 0) for k in rest)] if rest else []),
                [b.get(k, 0) for k in top] + ([sum(b.get(k, 0) for k in rest)] if rest else []))
    a = {int(k): v for k, v in a.items()}
    b = {int(k): v for k, v in b.items()}
    if name == "pitch_class":
        return _PC, [a.get(k, 0) for k in range(12)], [b.get(k, 0) for k in range(12)]
    if name == "bars":
        def binned(d):
            out = {}
            for k, v in d.items():
                out[4 * (k // 4)] = out.get(4 * (k // 4), 0) + v
            return out
        a, b = binned(a), binned(b)
    keys = sorted(set(a) | set(b))
    if name == "interval":
        keys = list(range(-12, 13))
    elif keys:
        keys = list(range(keys[0], keys[-1] + 1, 4 if name == "bars" else 1))
    labels = [f"{k}-{k + 3}" if name == "bars" else str(k) for k in keys]
    return labels, [a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_histogram(name: str, h: dict, ref: dict | None, tunes_label: str, ref_label: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, a, b = _bins(name, h, ref or {})
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(labels) + 2), 3.4), dpi=100)
    w = 0.4 if ref else 0.8
    ax.bar(x - (w / 2 if ref else 0), a, w, label=tunes_label)
    if ref:
        ax.bar(x + w / 2, b, w, label=ref_label)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90 if len(labels) > 14 or name in ("meter", "key", "bars") else 0,
                       fontsize=8)
    ax.set_ylabel("share (%)")
    ax.set_title(TITLES.get(name, name), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def plot_runs(hist: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [int(k) for k in hist]
    top = max(keys) if keys else 0
    xs = list(range(0, top + 1))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(xs) + 2), 3.4), dpi=100)
    ax.bar(xs, [hist.get(str(k), 0) for k in xs], 0.8)
    ax.axvline(3.5, color="k", lw=0.8, ls="--")
    ax.set_xlabel("longest run of bars shared with one training tune")
    ax.set_ylabel("tunes")
    ax.set_title("Novelty (right of the line: copies 4 or more bars)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _f(x, nd=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def markdown(r: dict, plots: list[str]) -> str:
    ref = "reference_tunes" in r
    L = [f"# abcgen evaluate: {Path(r['file']).name}" if "file" in r else "# abcgen evaluate", ""]
    if "file" in r:
        L += [f"{r['tunes']} tunes in `{r['file']}`.", "", "## Validity", "",
              "| figure | value |", "|---|---|",
              f"| read by abcgen into a music21 score | {_f(r['music21_parse_pct'])} % |",
              f"| stopped at the time limit (counted as failures) | {r.get('music21_timeouts', 0)} |"]
        if "abc2midi_ok_pct" in r:
            L.append(f"| accepted by abc2midi | {_f(r['abc2midi_ok_pct'])} % |")
        if r.get("bars_right_pct") is not None:
            L.append(f"| complete bars with the meter's length, as abcgen reads them | {_f(r['bars_right_pct'])} % "
                     f"({r['wrong_bars']} wrong of {r['complete_bars']}) |")
        if r.get("abc2midi_bars_right_tunes_pct") is not None:
            L.append(f"| tunes with no wrong bar as abc2midi plays them | "
                     f"{_f(r['abc2midi_bars_right_tunes_pct'])} % ({r['abc2midi_wrong_bars']} wrong bars) |")
        fails = r.get("music21_failures") or []
        if fails:
            L += ["", "Tunes music21 does not read:", ""]
            L += [f"- line {f['line']}, X:{f['x']}: {f['reason']}" for f in fails[:20]]
            if len(fails) > 20:
                L.append(f"- ... and {len(fails) - 20} more (all in report.json)")
    form = r.get("form") or {}
    if form.get("tunes"):
        rf = r.get("reference_form")
        L += ["", "## Form", "",
              f"Read from the text of the {form['tunes']} tunes"
              + (f", beside the train split of `{r['reference_corpus']}`." if rf else "."), "",
              "| figure | tunes |" + (" reference |" if rf else ""), "|---|---|" + ("---|" if rf else "")]
        for label, k, unit in FORM_ROWS:
            def cell(d):
                v = d.get(k) if d else None
                return "-" if v is None else f"{v:g}{' %' if unit else ''}"
            L.append(f"| {label} | {cell(form)} |" + (f" {cell(rf)} |" if rf else ""))
    if "measured_tunes" in r:
        L += ["", "## Music and structure", "",
              f"Figures of the {r['measured_tunes']} tunes music21 reads, from their canonical rewrite"
              + (f", beside the train split of `{r['reference_corpus']}` ({r['reference_tunes']} tunes)."
                 if ref else "."), "",
              "| figure | tunes |" + (" reference |" if ref else ""),
              "|---|---|" + ("---|" if ref else "")]
        for label, k in (("mean length (bars)", "mean_bars"), ("mean parts", "mean_parts"),
                         ("mean repeat signs", "mean_repeats"), ("mean pitch span (semitones)", "mean_span"),
                         ("mean size of a melodic interval (semitones)", "mean_abs_interval"),
                         ("notes", "notes")):
            L.append(f"| {label} | {_f(r.get(k))} |" + (f" {_f(r.get('reference_' + k))} |" if ref else ""))
        if ref:
            L += ["", "Overlap of each histogram with the reference: 1 - total variation distance "
                  "= sum over values of min(p, q), p and q the two histograms as shares "
                  "(1: the same distribution, 0: nothing in common).", "",
                  "| histogram | overlap |", "|---|---|"]
            L += [f"| {k} | {_f(r.get('overlap_' + k), 4)} |" for k in HISTOGRAMS]
        if r.get("novelty_tunes"):
            L += ["", "## Novelty", "",
                  "Longest run of consecutive bars (as canonical text) that a tune shares with one "
                  "training tune of the reference.", "",
                  "| figure | value |", "|---|---|",
                  f"| mean longest run | {_f(r['longest_shared_run_mean'])} bars |",
                  f"| median | {_f(r['longest_shared_run_median'], 1)} bars |",
                  f"| max | {r['longest_shared_run_max']} bars |",
                  f"| tunes copying 4 or more consecutive bars | {_f(r['copies_4_bars_pct'])} % |"]
    if "bits_per_char" in r:
        L += ["", "## Model", "",
              f"`{r['model']}` ({r['engine']}, {r['level']} level) on the {r['split']} split of "
              f"`{r['corpus']}`: {r['test_tunes']} tunes, {r['test_chars']} characters.", "",
              "| model | bits/char | bits/token |", "|---|---|---|",
              f"| LSTM {r['layers']}x{r['hidden']} | {r['bits_per_char']:.4f} | {r['bits_per_token']:.4f} |"]
        if "ngram_bits_per_char" in r:
            L += [f"| {r['ngram_order']}-gram Kneser-Ney | {r['ngram_bits_per_char']:.4f} | "
                  f"{r['ngram_bits_per_token']:.4f} |",
                  f"| xz given the train text | {r['xz_bits_per_char']:.4f} | - |"]
    if plots:
        L += ["", "## Plots", ""]
        L += [f"![{p}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def write_report(r: dict, out_dir: Path) -> Path:
    """report.md, report.json and the plots in out_dir; returns report.md's path."""
    out_dir = Path(out_dir)
    plots = []
    if "histograms" in r:
        ref = r.get("reference_histograms")
        name = Path(r.get("file", "tunes")).name
        for k in HISTOGRAMS:
            h = r["histograms"].get(k) or {}
            if not h and not (ref and ref.get(k)):
                continue
            png = plot_histogram(k, h, ref.get(k) if ref else None, name,
                                 f"{r.get('reference_corpus')} (train)")
            atomic_write_bytes(out_dir / f"{k}.png", png)
            plots.append(f"{k}.png")
        if r.get("longest_shared_run_hist"):
            atomic_write_bytes(out_dir / "novelty.png", plot_runs(r["longest_shared_run_hist"]))
            plots.append("novelty.png")
    atomic_write_text(out_dir / "report.json", json.dumps(r, indent=1, sort_keys=True) + "\n")
    atomic_write_text(out_dir / "report.md", markdown(r, plots))
    return out_dir / "report.md"
