"""What every picture shares: output formats and atomic saving, the figure width and
resolution, one-line labels, panel titles of tracks. matplotlib is imported only when a
picture is drawn, on the Agg canvas through :class:`matplotlib.figure.Figure` objects: no
pyplot, no global state."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from .._io import atomic_output

PathLike = Union[str, os.PathLike]

#: Output formats, by file extension.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: Figure width (inches) and resolution. Whole numbers of inches keep the pixel size exact
#: (width * dpi by height * dpi).
FIG_WIDTH = 10.0
DPI = 150
#: Panel title + grey note, at their font sizes, fit the figure width at this many characters per inch.
LABEL_CHARS_PER_INCH = 11


def check_figure_size(width: float = FIG_WIDTH, dpi: int = DPI, panel_height: float = 1.0) -> None:
    """A figure's width and panel height (inches: finite, > 0) and resolution (an integer >= 1),
    else a one-line ValueError naming the argument (matplotlib would fail later, obscurely)."""
    for name, value in (("width", width), ("panel_height", panel_height)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(f"{name}={value!r}: must be a positive number of inches")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 1:
        raise ValueError(f"dpi={dpi!r}: must be a positive integer")


def shorten(label: str, n: int) -> str:
    """``label`` on one line, cut to ``n`` characters with an ellipsis."""
    label = " ".join(str(label).split())
    return label if len(label) <= n else label[:n - 1].rstrip() + "\u2026"


def output_format(out_path: PathLike) -> str:
    """The picture format of ``out_path`` by its extension (:data:`FORMATS`); ValueError otherwise."""
    ext = Path(out_path).suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{out_path}: unknown picture format {ext or '(no extension)'!r}; "
                         f"use {', '.join(FORMATS)}")
    return FORMATS[ext]


def save_figure(fig, out_path: PathLike) -> None:
    """Write a matplotlib Figure to ``out_path`` (PNG, SVG or PDF by its extension), atomically,
    its folder created."""
    fmt = output_format(out_path)
    out_path = Path(out_path)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=fig.dpi, facecolor="white")


def panel_titles(columns: Sequence[Optional[int]], identifiers: Sequence[Optional[str]],
                  labels: Sequence[Optional[str]]) -> Tuple[List[str], List[str]]:
    """(left, right) panel titles: the description on the left; identifier and head column on
    the right, in grey. Without a description (no targets file): ``track N`` alone."""
    left, right = [], []
    for c, ident, label in zip(columns, identifiers, labels):
        label = (label or "").strip()
        ident = (ident or "").strip()
        default_id = c is not None and ident in ("", f"t{c}")
        if not label or label == ident:
            left.append(f"track {c}" if default_id else (ident or f"track {c}"))
            right.append("" if default_id or c is None else f"column {c}")
        else:
            left.append(label)
            right.append(" \u00b7 ".join(x for x in (ident if not default_id else "",
                                                      f"column {c}" if c is not None else "") if x))
    return left, right
