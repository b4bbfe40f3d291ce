"""The HTML kit every report page is built from: the stylesheet, escaping, fact lists, tables, base64 PNG
figures, base64 JPEG thumbnails and gallery cards, histogram bins, and the document around a page.

A page is self-contained (no external reference at all), so it can be mailed or archived: CSS inline,
plots as base64 PNG, images as base64 JPEG thumbnails. The pages (``bench_page``, ``score_page``) say
what to show; this module alone says how it looks, so both pages look alike.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import re

import numpy as np

GALLERY = 8  # worst failures per encoder / lowest-scoring pairs
THUMB = 160  # longest side of a gallery thumbnail, pixels
DPI = 144  # plots are drawn at 1.5x and shown at 96 dpi, so they stay sharp on dense screens
COLOURS = ("#2b6cb0", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#319795", "#b7791f", "#4a5568")
NUMBER = re.compile(r"[-+]?[0-9.]*|–")  # table cells right-aligned as numbers (– is a missing number)

CSS = """
body{margin:0;background:#f7f7f8;color:#1f2328;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Sans","DejaVu Sans",sans-serif}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:1px solid #e3e5e8;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 6px}.lead{color:#57606a;margin:0 0 12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0;font-size:14px}
dl.facts dt{color:#57606a}dl.facts dd{margin:0;word-break:break-all}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #e3e5e8;padding:4px 8px;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
th:first-child,td:first-child,td.t{text-align:left}th.group{text-align:center}th{background:#f3f4f6;font-weight:600}
.badge{font-size:11px;padding:0 6px;border-radius:8px;background:#fff3cd;color:#7a5d00;margin-left:6px}
figure{margin:12px 0 20px}figure.plot img{display:block;max-width:100%;height:auto}
figcaption{color:#57606a;font-size:13px;max-width:900px}
.note{background:#fff8e6;border-left:4px solid #d69e2e;padding:8px 12px;font-size:14px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.card{border:1px solid #e3e5e8;border-radius:6px;padding:8px;margin:0;background:#fcfcfd}
.row{display:flex;gap:6px}.row div{flex:1;text-align:center;font-size:11px;color:#57606a}
.row img{width:100%;border-radius:3px;display:block;background:#eee}
.missing{height:100px;display:flex;align-items:center;justify-content:center;background:#eee;border-radius:3px}
.card figcaption{margin-top:6px;font-size:12px;color:#1f2328}.neg{color:#c53030;font-weight:600}
"""


def escape(value) -> str:
    """``value`` as HTML text: every page goes through this, so a name or path never becomes markup."""
    return html.escape(str(value))


def note(text: str) -> str:
    """A highlighted paragraph: something the reader should know before trusting what follows."""
    return f'<p class="note">{escape(text)}</p>'


def facts(items) -> str:
    """A definition list of ``(label, value)``; empty values (None, "") are left out, not shown blank."""
    return (
        '<dl class="facts">'
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items if v not in (None, ""))
        + "</dl>"
    )


def table(header, rows, head: str | None = None) -> str:
    """``rows`` hold HTML already (callers escape); the first column is a label, the rest numbers (a cell
    that is not a number is left-aligned). ``head`` replaces the one-row header made from ``header``."""
    head = head or "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{c}</td>" if NUMBER.fullmatch(str(c)) or i == 0 else f'<td class="t">{c}</td>'
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>'


def grouped_head(first: str, columns: list[tuple[str, str]]) -> str:
    """A two-row table header: ``first`` spans both rows, then each run of ``(group, label)`` columns with
    the same group gets one cell above its labels. Keeps wide tables narrow (a group name once)."""
    return (
        f'<tr><th rowspan="2">{escape(first)}</th>'
        + "".join(
            f'<th colspan="{len(list(g))}" class="group">{escape(name)}</th>'
            for name, g in itertools.groupby(columns, key=lambda c: c[0])
        )
        + "</tr><tr>"
        + "".join(f"<th>{escape(label)}</th>" for _, label in columns)
        + "</tr>"
    )


def plot(panels: list, draw, caption: str, alt: str, height: float = 2.7, max_cols: int = 3) -> str:
    """One PNG, a panel per item of ``panels`` (``draw(ax, item)``); matplotlib's object API, so no
    global backend is set. ``caption`` is HTML (callers escape)."""
    import matplotlib
    from matplotlib.figure import Figure

    style = {
        "font.size": 8.5,
        "axes.titlesize": 9.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "legend.fontsize": 7.5,
    }
    cols = min(len(panels), max_cols)
    with matplotlib.rc_context(style):
        fig = Figure(figsize=(min(11.0, 4.6 * cols), height * math.ceil(len(panels) / cols)), layout="constrained")
        axes = fig.subplots(math.ceil(len(panels) / cols), cols, squeeze=False).ravel()
        for ax, panel in zip(axes, panels):
            draw(ax, panel)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure class="plot"><img alt="{escape(alt)}" width="{round(fig.get_figwidth() * 96)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def thumb(image_input) -> str:
    """A base64 JPEG thumbnail, or a grey box saying why not: one bad image never fails the page."""
    from nearid.images.decode import load_image

    try:
        image = load_image(image_input)
    except Exception as exc:
        return f'<div class="missing" title="{escape(exc)}">image unavailable</div>'
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def card(images: list[tuple[str, object]], caption: str, margin: float | None = None) -> str:
    """A gallery card: ``(label, image)`` thumbnails side by side over an HTML ``caption``; ``margin``
    (a bench failure's) is kept as ``data-margin`` so the page can be checked against the tables."""
    attr = f' data-margin="{margin!r}"' if margin is not None else ""
    cells = "".join(f"<div>{thumb(ref)}{escape(label)}</div>" for label, ref in images)
    return f'<figure class="card"{attr}><div class="row">{cells}</div><figcaption>{caption}</figcaption></figure>'


def gallery(cards: list[str]) -> str:
    return '<div class="gallery">' + "".join(cards) + "</div>"


def hist_bins(values: np.ndarray, n: int = 40, edge: float | None = None) -> np.ndarray:
    """Equal bins over ``values``; with ``edge`` given, that value is a bin edge (0 for margins)."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    width = max((hi - lo) / n, 1e-4)
    if edge is None:
        return lo + width * np.arange(n + 1)
    return edge + width * np.arange(math.floor((lo - edge) / width), math.ceil((hi - edge) / width) + 1)


def document(title: str, body: str, source_name: str) -> str:
    """The whole HTML file around a page's ``body`` (HTML), naming the results file it was made from."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><title>{escape(title)}</title><style>{CSS}</style>'
        f'</head><body><main>{body}<p class="lead">Made by <code>nearid report</code> from '
        f"{escape(source_name)}; re-make it at any time, nothing is re-embedded.</p></main></body></html>\n"
    )
