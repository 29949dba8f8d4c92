"""Predicted activity at orthologous loci: the human sequence with the human head, the mouse
sequence with the mouse head (``basenji2-fast orthologs``, :func:`compare_orthologs`).

    basenji2-fast orthologs -m basenji2.safetensors --human-fasta hg38.fa --mouse-fasta mm10.fa \\
        pairs.tsv -o out.tsv --targets-human targets_human.txt --targets-mouse targets_mouse.txt \\
        --tracks-human '^CAGE:' --tracks-mouse '^CAGE:' [--track-map map.tsv] [--cross] [--plot out.png]

Pairs file
----------
One pair per line, tab-separated, in either form (the form may change from line to line):

- ``HUMAN_INTERVAL  MOUSE_INTERVAL  [NAME]`` with intervals written ``chr:start-end`` or
  ``chr:start-end:STRAND`` (0-based, end-exclusive, as BED and ``predict.h5``; commas
  allowed), or
- BEDPE-like ``hchrom hstart hend mchrom mstart mend [NAME]``, optionally followed by the
  strands, ``... NAME HSTRAND MSTRAND`` (9 columns) or, as BEDPE, ``... NAME SCORE HSTRAND
  MSTRAND`` (10 columns, the score ignored).

STRAND is ``+``, ``-`` or ``.``; missing or ``.`` means ``+``. A ``-`` interval is predicted
in the orientation of its transcript: the reverse complement of its window goes through the
model and the predicted bins are flipped back to genome order, so the summed bins still cover
the interval, and each track column reads the interval's own strand (a ``+``-strand CAGE
track gives the ``-`` strand of the genome; no strand-pair swap). Unstranded tracks change
only as the model's reverse-complement predictions differ from its forward ones.

Empty lines and lines starting with ``#`` are skipped; the first other line is a header (and
skipped) when its first column starts with ``human`` (``human<TAB>mouse<TAB>name``). NAME
defaults to the human interval. A malformed line is an error naming ``file:line``. Output
intervals of ``-`` strand are written ``chr:start-end:-``.

Each sequence gets the model window centred on its interval, as predict-bed
(``mid = (start + end) // 2``, N beyond chromosome ends). The statistic is the sum of the
predictions over the output bins that overlap the interval (``--center-bins N``: the N central
bins instead, whatever the intervals: ``(n_bins - N) // 2`` on, symmetric about the window's
middle, unlike sat's and saliency's ``center``, which are basenji_sat_bed.py's bins
``n_bins // 2`` and the next); an interval reaching past the window's output region
is an error (use ``--center-bins``).

Matched track pairs
-------------------
The human and mouse heads predict different experiments; a comparison needs pairs of tracks
that measure the same thing. ``--track-map MAP.tsv``: one ``HUMAN_TRACK<TAB>MOUSE_TRACK`` per
line (an identifier or a row number of the species' targets file, a head column without
one; ``#`` comments; an optional header line ``human<TAB>mouse``). Without a map, tracks are
matched by identical descriptions (case and runs of spaces ignored) of the two targets files,
among the selected tracks; when a description occurs several times, its k-th human track is
paired with its k-th mouse track. With a map and no ``--tracks-*`` selectors, only the mapped
tracks are computed.

Files
-----
``OUT`` (``out.tsv``): one line per pair and matched track pair:
``name human_interval mouse_interval human_track mouse_track human_id mouse_id
human_description mouse_description human mouse log2_ratio`` where ``human`` is the human
sequence's sum on the human head, ``mouse`` the mouse sequence's on the mouse head and
``log2_ratio = log2((human + 1) / (mouse + 1))``. With ``--cross`` four more columns:
``human_seq_mouse_head`` (the human sequence on the mouse track), ``mouse_seq_human_head``,
``log2_ratio_human_head = log2((human + 1) / (mouse_seq_human_head + 1))`` and
``log2_ratio_mouse_head = log2((human_seq_mouse_head + 1) / (mouse + 1))``: the sequences
compared under one head, which separates sequence divergence from the heads' differences.
Track numbers are head columns.

``OUT`` with ``.tsv`` replaced by ``.tracks.tsv``: every selected track's sum, one line per
pair, sequence, head and track (``name sequence head track identifier description bins
sum``; ``bins`` is the first and last output bin summed, both included: ``46-49`` is four
bins, where ``--bins A-B`` of saliency ends before B).

``OUT`` with ``.tsv`` replaced by ``.summary.tsv``: one line per matched track pair: the
number of pairs, the Pearson correlation across pairs of ``human`` vs ``mouse`` and the mean
``log2_ratio`` (with ``--cross`` also the correlations under each head). ``nan`` when fewer
than two pairs or a constant column.

``--plot out.png``: ``human`` vs ``mouse`` per pair for the first matched track pair.

The window of each sequence runs the trunk once: with ``--cross`` both heads come from that
one pass (``Model.predict(head=[...])``).
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .._io import OptionError, atomic_output, check_output
from ..cli_options import (add_batch_size_option, add_ensemble_options, add_model_options, add_run_options, load_model,
                           one_line_errors)
from ..genome import as_fasta, check_span, parse_strand, parse_stranded_interval
from ..model import Ensemble
from ..spec import check_positive_int
from ..plots.figure import output_format, save_figure
from ..targets import Targets, TrackSelection, read_targets, select_tracks
from ..windows import predict, resolve_tracks, window, window_codes


class Pair(NamedTuple):
    """One orthologous pair: 0-based end-exclusive intervals; ``line`` its 1-based line;
    each interval's strand ``"+"`` or ``"-"`` (``-``: predicted reverse-complemented)."""

    name: str
    human: Tuple[str, int, int]
    mouse: Tuple[str, int, int]
    line: int = 0
    human_strand: str = "+"
    mouse_strand: str = "+"


def _fmt(iv: Tuple[str, int, int], strand: str = "+") -> str:
    return f"{iv[0]}:{iv[1]}-{iv[2]}" + (":-" if strand == "-" else "")


def _coords(chrom: str, start: str, end: str) -> Tuple[str, int, int]:
    try:
        s, e = int(start), int(end)
    except ValueError:
        raise ValueError(f"start/end {start!r}, {end!r} are not integers") from None
    if s < 0 or e <= s:
        raise ValueError(f"bad interval {chrom}:{s}-{e} (need 0 <= start < end)")
    return chrom, s, e


def _named_strand(who: str, text: str) -> str:
    try:
        return parse_strand(text)
    except ValueError as e:
        raise ValueError(f"{who} {e}") from None


def _table_lines(path, is_header):
    """Yield ``(line number, tab-separated columns)`` of a small table file, skipping blank
    lines, ``#`` comments and a first data line for which ``is_header(first column)``."""
    first = True
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.rstrip("\r\n").split("\t")
            header, first = first and is_header(cols[0].strip().lower()), False
            if not header:
                yield lineno, cols


def read_pairs(path) -> List[Pair]:
    """The pairs file (module docstring) -> pairs. Raises ValueError ``file:line: why``."""
    pairs: List[Pair] = []
    for lineno, cols in _table_lines(path, lambda c: c.startswith("human")):
        try:
            hs = ms = "+"
            if len(cols) in (2, 3):
                h = m = None
                try:
                    h, hs = parse_stranded_interval(cols[0])
                    m, ms = parse_stranded_interval(cols[1])
                except ValueError as e:
                    raise ValueError(f"{'mouse' if h else 'human'} {e}") from None
                name = cols[2] if len(cols) == 3 else ""
            elif len(cols) in (6, 7, 9, 10):
                h, m = _coords(*cols[0:3]), _coords(*cols[3:6])
                name = cols[6] if len(cols) > 6 else ""
                if len(cols) >= 9:  # ... NAME [SCORE] HSTRAND MSTRAND (BEDPE's score ignored)
                    hs = _named_strand("human", cols[-2])
                    ms = _named_strand("mouse", cols[-1])
            else:
                raise ValueError(f"expected 2-3 tab-separated columns (HUMAN_INTERVAL MOUSE_INTERVAL [NAME]) "
                                 f"or 6-7, 9 or 10 (hchrom hstart hend mchrom mstart mend [NAME [SCORE] "
                                 f"HSTRAND MSTRAND]), got {len(cols)}")
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        pairs.append(Pair(name.strip() or _fmt(h), h, m, lineno, hs, ms))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def _as_pairs(pairs) -> Tuple[List[Pair], str]:
    if isinstance(pairs, (str, bytes, os.PathLike)):
        return read_pairs(pairs), os.fspath(pairs)
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, Pair):
            out.append(p)
            continue
        try:
            h, hs = parse_stranded_interval(p[0]) if isinstance(p[0], str) else _tuple_interval(p[0])
            m, ms = parse_stranded_interval(p[1]) if isinstance(p[1], str) else _tuple_interval(p[1])
        except (ValueError, TypeError, IndexError) as e:
            raise ValueError(f"pair {i}: {e}") from None
        out.append(Pair(str(p[2]) if len(p) > 2 else _fmt(h), h, m, 0, hs, ms))
    if not out:
        raise ValueError("no pairs")
    return out, "pairs"


def _tuple_interval(t) -> Tuple[Tuple[str, int, int], str]:
    """(chrom, start, end[, strand]) -> ((chrom, start, end), strand)."""
    if len(t) not in (3, 4):
        raise ValueError(f"interval {t!r}: expected (chrom, start, end[, strand])")
    return _coords(*map(str, t[:3])), parse_strand(str(t[3])) if len(t) == 4 else "+"


def _where(p: Pair, i: int, source: str) -> str:
    return f"{source}:{p.line}" if p.line else f"pair {i} ({p.name})"


# --------------------------------------------------------------------------------------
# Tracks and their matching

def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().casefold()


def _one_track(targets: Optional[Targets], text: str, n_out: int) -> int:
    """A map entry (identifier or row number) -> its targets row (head column without a file)."""
    sel = select_tracks(targets, text.strip(), n_out)
    if len(sel) != 1:
        raise ValueError(f"{text!r} names {len(sel)} tracks, not one")
    return sel.rows[0]


def read_track_map(path, human_targets: Optional[Targets], mouse_targets: Optional[Targets], n_human: int,
                   n_mouse: int) -> List[Tuple[int, int]]:
    """MAP.tsv -> [(human targets row, mouse targets row)] in file order (rows are head
    columns without a targets file). Raises ValueError ``file:line: why``."""
    out: List[Tuple[int, int]] = []
    for lineno, cols in _table_lines(path, lambda c: c == "human"):
        try:
            if len(cols) != 2:
                raise ValueError(f"expected 2 tab-separated columns (HUMAN_TRACK MOUSE_TRACK), got {len(cols)}")
            try:
                h = _one_track(human_targets, cols[0], n_human)
            except ValueError as e:
                raise ValueError(f"human track: {e}") from None
            try:
                m = _one_track(mouse_targets, cols[1], n_mouse)
            except ValueError as e:
                raise ValueError(f"mouse track: {e}") from None
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if (h, m) in out:
            raise ValueError(f"{path}:{lineno}: the pair {cols[0]}, {cols[1]} is listed twice")
        out.append((h, m))
    if not out:
        raise ValueError(f"{path}: no track pairs")
    return out


def match_by_description(human: TrackSelection, mouse: TrackSelection) -> List[Tuple[int, int]]:
    """Positions (in the two selections) of tracks with identical descriptions (case and runs
    of spaces ignored), in human selection order; a description's k-th human track pairs with
    its k-th mouse track."""
    by_desc = {}
    for j, d in enumerate(mouse.labels):
        by_desc.setdefault(_norm(d), []).append(j)
    used = {}
    out = []
    for i, d in enumerate(human.labels):
        key = _norm(d)
        k = used.get(key, 0)
        if k < len(by_desc.get(key, ())):
            out.append((i, by_desc[key][k]))
            used[key] = k + 1
    return out


# --------------------------------------------------------------------------------------
# The computation

@dataclass
class OrthologResult:
    """What :func:`compare_orthologs` computed.

    Attributes
    ----------
    pairs : list of Pair [P]
    human_sel, mouse_sel : TrackSelection of each head
    human, mouse : float64 [P, tracks of that head]: the human sequence on the human head,
        the mouse sequence on the mouse head, summed over the bins in ``human_bins`` /
        ``mouse_bins``
    human_on_mouse, mouse_on_human : float64 [P, tracks] (``cross`` only): the human
        sequence on the mouse head's tracks, the mouse sequence on the human head's
    human_bins, mouse_bins : int [P, 2]: first and end (exclusive) output bin summed
    matched : list of (human position, mouse position) in the selections
    heads : (human head name, mouse head name)
    """

    pairs: List[Pair]
    human_sel: TrackSelection
    mouse_sel: TrackSelection
    human: np.ndarray
    mouse: np.ndarray
    human_bins: np.ndarray
    mouse_bins: np.ndarray
    matched: List[Tuple[int, int]]
    heads: Tuple[str, str] = ("human", "mouse")
    human_on_mouse: Optional[np.ndarray] = None
    mouse_on_human: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)

    def log2_ratio(self) -> np.ndarray:
        """float64 [P, matched]: log2((human + 1) / (mouse + 1)) per matched track pair."""
        hi, mi = self._idx()
        return np.log2((self.human[:, hi] + 1) / (self.mouse[:, mi] + 1))

    def _idx(self):
        return [h for h, _ in self.matched], [m for _, m in self.matched]

    def summary(self) -> List[dict]:
        """Per matched track pair: n, Pearson r of human vs mouse across pairs, mean log2 ratio
        (and with cross the correlations under each head)."""
        out = []
        lr = self.log2_ratio()
        for k, (h, m) in enumerate(self.matched):
            row = {"human_track": self.human_sel.columns[h], "mouse_track": self.mouse_sel.columns[m],
                   "human_id": self.human_sel.identifiers[h], "mouse_id": self.mouse_sel.identifiers[m],
                   "human_description": self.human_sel.labels[h], "mouse_description": self.mouse_sel.labels[m],
                   "n_pairs": len(self.pairs), "pearson_r": _pearson(self.human[:, h], self.mouse[:, m]),
                   "mean_log2_ratio": float(lr[:, k].mean())}
            if self.human_on_mouse is not None:
                row["pearson_r_human_head"] = _pearson(self.human[:, h], self.mouse_on_human[:, h])
                row["pearson_r_mouse_head"] = _pearson(self.human_on_mouse[:, m], self.mouse[:, m])
            out.append(row)
        return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r, nan for fewer than two values or a constant one."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def interval_bins(model, iv: Tuple[str, int, int], center_bins: Optional[int] = None) -> Tuple[int, int]:
    """Output bins ``[b0, b1)`` of the window centred on ``iv`` that overlap it (or the
    ``center_bins`` central ones); ValueError when the interval reaches past the output."""
    nb, bs = model.n_bins, model.bin_size
    if center_bins is not None:
        b0 = (nb - center_bins) // 2
        return b0, b0 + center_bins
    out0 = window(iv, model.seq_length)[0] + model.spec.crop_bins * bs  # first output bin's first base
    b0 = (iv[1] - out0) // bs
    b1 = -(-(iv[2] - out0) // bs)
    if b0 < 0 or b1 > nb:
        raise ValueError(f"interval {_fmt(iv)} ({iv[2] - iv[1]:,} bp) reaches past the model's output region "
                         f"({nb * bs:,} bp around its centre); use --center-bins")
    return b0, b1


def compare_orthologs(model, human_fasta, mouse_fasta, pairs, human_tracks=None, mouse_tracks=None,
                      human_targets=None, mouse_targets=None, track_map=None, cross: bool = False,
                      center_bins: Optional[int] = None, rc: bool = False, shifts: Sequence[int] = (0,),
                      batch_size: int = 4, n_encoding: str = "zeros", human_head: str = "human",
                      mouse_head: str = "mouse", progress: bool = False) -> OrthologResult:
    """Predict each pair's human sequence with the human head and its mouse sequence with the
    mouse head, and sum over the bins covering each interval (module docstring).

    Parameters
    ----------
    model : a Model with both heads (``convert model_human.h5 model_mouse.h5``)
    human_fasta, mouse_fasta : FASTA paths or open ``pyfaidx.Fasta``
    pairs : pairs file path, or a list of (human interval, mouse interval[, name]) with
        intervals as ``"chr:start-end[:strand]"`` strings or (chrom, start, end[, strand]);
        a ``-`` interval is predicted reverse-complemented, its bins flipped back (module
        docstring)
    human_tracks, mouse_tracks : track selectors (:func:`basenji2_fast.targets.select_tracks`)
    human_targets, mouse_targets : targets files (path or Targets): identifiers, descriptions
        (matching) and strand pairs
    track_map : path of a MAP.tsv (module docstring), or a list of (human row, mouse row);
        None: match by identical descriptions
    cross : also predict each sequence with the other species' head
    center_bins : sum the N central bins instead of the bins covering each interval
    rc, shifts, batch_size, n_encoding : as :meth:`Model.predict`

    Returns
    -------
    OrthologResult
    """
    pairs, source = _as_pairs(pairs)
    if center_bins is not None:
        center_bins = check_positive_int("center_bins", center_bins)
        if not 1 <= center_bins <= model.n_bins:
            raise OptionError(f"{{center_bins}} {center_bins}: must lie in 1..{model.n_bins}",
                              center_bins=("center_bins", "--center-bins"))
    check_positive_int("batch_size", batch_size)
    if human_head == mouse_head:
        raise ValueError(f"the human and mouse heads are both {human_head!r}")
    ht = read_targets(human_targets) if isinstance(human_targets, (str, os.PathLike)) else human_targets
    mt = read_targets(mouse_targets) if isinstance(mouse_targets, (str, os.PathLike)) else mouse_targets
    for head in (human_head, mouse_head):
        if head not in model.spec.heads:
            raise ValueError(f"no head {head!r}; this model has {model.head_names} (orthologs needs a model with "
                             "a human and a mouse head: basenji2-fast convert model_human.h5 model_mouse.h5)")
    n_h, n_m = model.spec.heads[human_head].tracks, model.spec.heads[mouse_head].tracks
    if track_map is not None:
        rows = (read_track_map(track_map, ht, mt, n_h, n_m) if isinstance(track_map, (str, os.PathLike))
                else [(int(a), int(b)) for a, b in track_map])
        _, hsel = resolve_tracks(model, human_head, human_tracks if human_tracks is not None
                                 else list(dict.fromkeys(r for r, _ in rows)), ht)
        _, msel = resolve_tracks(model, mouse_head, mouse_tracks if mouse_tracks is not None
                                 else list(dict.fromkeys(r for _, r in rows)), mt)
        hpos = {r: i for i, r in enumerate(hsel.rows)}
        mpos = {r: i for i, r in enumerate(msel.rows)}
        matched = []
        for a, b in rows:
            if a not in hpos or b not in mpos:
                what = (f"human track {_track_name(ht, a)}" if a not in hpos
                        else f"mouse track {_track_name(mt, b)}")
                raise ValueError(f"track map: {what} is not among the selected tracks")
            matched.append((hpos[a], mpos[b]))
    else:
        if ht is None or mt is None:
            raise OptionError("matching tracks by description needs both targets files ({targets}); or give a "
                              "track map ({track_map})", targets=("human_targets, mouse_targets",
                                                                  "--targets-human, --targets-mouse"),
                              track_map=("track_map", "--track-map"))
        _, hsel = resolve_tracks(model, human_head, human_tracks, ht)
        _, msel = resolve_tracks(model, mouse_head, mouse_tracks, mt)
        matched = match_by_description(hsel, msel)
        if not matched:
            raise OptionError(f"no selected human track ({ht.path}) has the description of a selected mouse track "
                              f"({mt.path}); give a track map ({{track_map}})", track_map=("track_map", "--track-map"))

    hfa, mfa = as_fasta(human_fasta), as_fasta(mouse_fasta)
    hb, mb = [], []
    for i, p in enumerate(pairs):  # every input checked before any prediction
        for iv, fa, bins, species in ((p.human, hfa, hb, "human"), (p.mouse, mfa, mb, "mouse")):
            if iv[0] not in fa:
                raise ValueError(f"{_where(p, i, source)}: no sequence {iv[0]!r} in the {species} FASTA "
                                 f"{getattr(fa, 'filename', '')}")
            check_span(fa, *iv, f"{_where(p, i, source)}: {species} interval {_fmt(iv)}")
            try:
                bins.append(interval_bins(model, iv, center_bins))
            except ValueError as e:
                raise ValueError(f"{_where(p, i, source)}: {species} {e}") from None
    hb, mb = np.array(hb, np.int64), np.array(mb, np.int64)

    P = len(pairs)
    res = OrthologResult(pairs, hsel, msel, np.zeros((P, len(hsel))), np.zeros((P, len(msel))), hb, mb, matched,
                         (human_head, mouse_head))
    if cross:
        res.human_on_mouse, res.mouse_on_human = np.zeros((P, len(msel))), np.zeros((P, len(hsel)))
    sels = {human_head: hsel, mouse_head: msel}
    ensemble = Ensemble(rc, shifts, n_encoding, batch_size)
    L, bs = model.seq_length, ensemble.batch_size
    # (sequence side, its FASTA, own head, other head, own result, cross result, bins)
    sides = ((lambda p: (p.human, p.human_strand), hfa, human_head, mouse_head, res.human, res.human_on_mouse, hb),
             (lambda p: (p.mouse, p.mouse_strand), mfa, mouse_head, human_head, res.mouse, res.mouse_on_human, mb))
    with tqdm(total=2 * P, unit="window", disable=not progress, desc="orthologs") as bar:
        for b0 in range(0, P, bs):
            chunk = pairs[b0:b0 + bs]
            for get, fa, own, other, out, cross_out, bins in sides:
                # a - interval: the window read on its strand (the transcript's orientation)
                codes = np.stack([window_codes(fa, get(p)[0], L, get(p)[1], what=_fmt(*get(p))) for p in chunk])
                minus = np.array([get(p)[1] == "-" for p in chunk])
                pred = predict(model, codes, {h: sels[h] for h in ([own, other] if cross else [own])}, ensemble)
                for j in range(len(chunk)):
                    s0, s1 = bins[b0 + j]
                    for h, dest in ((own, out), (other, cross_out)) if cross else ((own, out),):
                        # bins of a reverse-complemented window back in genome order, so
                        # [s0, s1) covers the interval; tracks stay on the interval's strand
                        pj = pred[h][j, ::-1] if minus[j] else pred[h][j]
                        dest[b0 + j] = pj[s0:s1].sum(axis=0, dtype=np.float64)
                bar.update(len(chunk))
    return res


def _track_name(targets: Optional[Targets], row: int) -> str:
    return f"{targets.identifier[row]} (row {row})" if targets is not None else f"column {row}"


# --------------------------------------------------------------------------------------
# Files

def _num(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.6g}"


def side_paths(out) -> Tuple[Path, Path]:
    """(per-track file, summary file) beside ``out``: ``.tsv`` -> ``.tracks.tsv`` / ``.summary.tsv``."""
    out = Path(out)
    stem = out.name[:-4] if out.name.endswith(".tsv") else out.name
    return out.with_name(stem + ".tracks.tsv"), out.with_name(stem + ".summary.tsv")


def write_orthologs(res: OrthologResult, out, plot=None) -> List[Path]:
    """Write ``out`` (matched pairs), its ``.tracks.tsv`` and ``.summary.tsv`` and, with
    ``plot``, the picture; each file atomically. Returns the paths written."""
    out = Path(out)
    tracks_path, summary_path = side_paths(out)
    for p in (out, tracks_path, summary_path) + ((Path(plot),) if plot else ()):
        p.parent.mkdir(parents=True, exist_ok=True)
    cross = res.human_on_mouse is not None
    hs, ms = res.human_sel, res.mouse_sel
    lr = res.log2_ratio()
    cols = ["name", "human_interval", "mouse_interval", "human_track", "mouse_track", "human_id", "mouse_id",
            "human_description", "mouse_description", "human", "mouse", "log2_ratio"]
    if cross:
        cols += ["human_seq_mouse_head", "mouse_seq_human_head", "log2_ratio_human_head", "log2_ratio_mouse_head"]
    with atomic_output(out) as tmp, open(tmp, "w") as fh:
        fh.write("\t".join(cols) + "\n")
        for i, p in enumerate(res.pairs):
            for k, (h, m) in enumerate(res.matched):
                row = [p.name, _fmt(p.human, p.human_strand), _fmt(p.mouse, p.mouse_strand), str(hs.columns[h]),
                       str(ms.columns[m]), hs.identifiers[h], ms.identifiers[m], hs.labels[h], ms.labels[m],
                       _num(res.human[i, h]), _num(res.mouse[i, m]), _num(lr[i, k])]
                if cross:
                    hm, mh = res.human_on_mouse[i, m], res.mouse_on_human[i, h]
                    row += [_num(hm), _num(mh), _num(math.log2((res.human[i, h] + 1) / (mh + 1))),
                            _num(math.log2((hm + 1) / (res.mouse[i, m] + 1)))]
                fh.write("\t".join(row) + "\n")
    with atomic_output(tracks_path) as tmp, open(tmp, "w") as fh:
        fh.write("name\tsequence\thead\ttrack\tidentifier\tdescription\tbins\tsum\n")
        hh, mh_ = res.heads
        for i, p in enumerate(res.pairs):
            blocks = [("human", hh, hs, res.human, res.human_bins), ("mouse", mh_, ms, res.mouse, res.mouse_bins)]
            if cross:
                blocks += [("human", mh_, ms, res.human_on_mouse, res.human_bins),
                           ("mouse", hh, hs, res.mouse_on_human, res.mouse_bins)]
            for seq, head, sel, vals, bins in blocks:
                b = f"{bins[i, 0]}-{bins[i, 1] - 1}"
                for t in range(len(sel)):
                    fh.write(f"{p.name}\t{seq}\t{head}\t{sel.columns[t]}\t{sel.identifiers[t]}\t{sel.labels[t]}\t{b}\t"
                             f"{_num(vals[i, t])}\n")
    summary = res.summary()
    with atomic_output(summary_path) as tmp, open(tmp, "w") as fh:
        keys = list(summary[0])
        fh.write("\t".join(keys) + "\n")
        for row in summary:
            fh.write("\t".join(_num(v) if isinstance(v, float) else str(v) for v in row.values()) + "\n")
    written = [out, tracks_path, summary_path]
    if plot:
        plot_orthologs(res, plot)
        written.append(Path(plot))
    return written


def plot_orthologs(res: OrthologResult, path, which: int = 0) -> None:
    """Scatter of the human vs mouse sums per pair for matched track pair ``which``
    (log1p axes: sums of softplus outputs span orders of magnitude), with y = x and Pearson r."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, m = res.matched[which]
    x, y = res.human[:, h], res.mouse[:, m]
    fig = Figure(figsize=(6, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(np.log1p(np.maximum(x, 0)), np.log1p(np.maximum(y, 0)), s=14, alpha=0.7, color="#1f77b4",
               edgecolors="none")
    lo = float(np.log1p(max(0.0, min(x.min(), y.min()))))
    hi = float(np.log1p(max(x.max(), y.max(), 0.0)))
    ax.plot([lo, hi], [lo, hi], color="#7f7f7f", lw=0.8, ls="--")
    ax.set_xlabel(f"human sequence, human head: log(1 + sum)\n{res.human_sel.identifiers[h]} "
                  f"{res.human_sel.labels[h]}"[:120])
    ax.set_ylabel(f"mouse sequence, mouse head: log(1 + sum)\n{res.mouse_sel.identifiers[m]} "
                  f"{res.mouse_sel.labels[m]}"[:120])
    r = _pearson(x, y)
    ax.set_title(f"{len(res.pairs)} orthologous pairs; Pearson r of the sums = "
                 f"{'nan' if math.isnan(r) else f'{r:.3f}'}")
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------
# Command line

def add_orthologs_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``orthologs`` to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "orthologs", help="compare predictions at orthologous human/mouse loci",
        description="For each pair of orthologous intervals, predict the human sequence with the human head and "
                    "the mouse sequence with the mouse head, sum over the bins covering each interval, and "
                    "compare matched track pairs (log2 ratios, correlation across pairs). Writes OUT, "
                    "OUT.tracks.tsv and OUT.summary.tsv (OUT's .tsv replaced).")
    add_model_options(p)
    p.add_argument("--human-fasta", required=True, help="human genome FASTA")
    p.add_argument("--mouse-fasta", required=True, help="mouse genome FASTA")
    p.add_argument("pairs", help="pairs file: HUMAN_INTERVAL<TAB>MOUSE_INTERVAL[<TAB>NAME] (chr:start-end[:STRAND], "
                                 "0-based) or hchrom hstart hend mchrom mstart mend [name [score] hstrand mstrand], "
                                 "one pair per line; a - strand interval is predicted reverse-complemented")
    p.add_argument("-o", "--out", required=True, help="output table (one line per pair and matched track pair)")
    p.add_argument("--targets-human", default=None, help="basenji targets file of the human head")
    p.add_argument("--targets-mouse", default=None, help="basenji targets file of the mouse head")
    p.add_argument("--tracks-human", default=None, help="human track selector (as --tracks elsewhere)")
    p.add_argument("--tracks-mouse", default=None, help="mouse track selector")
    p.add_argument("--track-map", default=None,
                   help="HUMAN_TRACK<TAB>MOUSE_TRACK per line (identifiers or row numbers); default: match tracks "
                        "by identical descriptions in the two targets files")
    p.add_argument("--cross", action="store_true", help="also predict each sequence with the other species' head")
    p.add_argument("--center-bins", type=int, default=None,
                   help="sum the N central output bins instead of the bins covering each interval")
    p.add_argument("--plot", default=None, help="PNG/SVG/PDF: human vs mouse per pair, first matched track pair")
    p.add_argument("--human-head", default="human", help="name of the human head (default human)")
    p.add_argument("--mouse-head", default="mouse", help="name of the mouse head (default mouse)")
    add_ensemble_options(p)
    add_batch_size_option(p, 4, "pairs per engine call")
    add_run_options(p)
    p.set_defaults(func=run_orthologs)
    return p


def run_orthologs(args: argparse.Namespace) -> int:
    """The ``orthologs`` subcommand; prints what it wrote, or a one-line error (exit status 1)."""
    def work():
        if args.plot:
            output_format(args.plot)  # a bad extension fails before any work
        read_pairs(args.pairs)  # inputs first: a bad line fails before the model loads
        inputs = [args.model, args.human_fasta, args.mouse_fasta, args.pairs, args.targets_human, args.targets_mouse,
                  args.track_map]
        for out in (Path(args.out),) + side_paths(Path(args.out)) + ((Path(args.plot),) if args.plot else ()):
            check_output(out, inputs=inputs, parents=True)
        ht = read_targets(args.targets_human) if args.targets_human else None
        mt = read_targets(args.targets_mouse) if args.targets_mouse else None
        res = compare_orthologs(load_model(args), args.human_fasta, args.mouse_fasta, args.pairs,
                                human_tracks=args.tracks_human, mouse_tracks=args.tracks_mouse, human_targets=ht,
                                mouse_targets=mt, track_map=args.track_map, cross=args.cross,
                                center_bins=args.center_bins, rc=args.rc, shifts=args.shifts,
                                batch_size=args.batch_size, n_encoding=args.n_encoding, human_head=args.human_head,
                                mouse_head=args.mouse_head, progress=not args.quiet)
        paths = write_orthologs(res, args.out, plot=args.plot)
        print(f"{len(res.pairs)} pairs, {len(res.matched)} matched track pairs: wrote "
              + ", ".join(map(str, paths)))

    return one_line_errors(getattr(args, "command", None) or "orthologs", work)
