"""Model windows over the genome: where a window lies, which head columns it computes, and
the batched ensemble-predict loop every workflow shares.

Geometry
--------
A region's window is the model's ``seq_length`` bp centred on it as basenji_predict_bed.py
centres its windows (:func:`window`); its output bins cover the window less ``crop_bins``
bins each side (:func:`output_window`).

Tracks
------
:func:`resolve_tracks` is the one place a head and a track selector become a
:class:`~basenji2_fast.targets.TrackSelection`; :func:`plan_heads` splits a
:class:`~basenji2_fast.model.TrackRequest` for several heads into one request per head.

A merged model (``convert model_human.h5 model_mouse.h5``) has one trunk and two heads.
The workflow commands predict one head (the default, unchanged) or several: ``head="both"``
(or ``"all"``) means every head of the model, ``"human,mouse"`` or a list names them.

With several heads, targets files and track selectors are given per head: a dict
``{head: value}`` in Python, ``-t HEAD=targets.txt`` / ``--tracks HEAD=SELECTOR`` on the
command line (repeatable). A plain targets file (no ``HEAD=``) goes to the one requested head
whose output count equals its row count; a plain selector applies to every head that has no
selector of its own.

Outputs of a multi-head run go to one folder per head, ``OUT/<head>/``, each laid out exactly
as a single-head run of that head would write ``OUT/``.
"""
from __future__ import annotations

import os
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
from tqdm import tqdm

from .dna import encode, revcomp
from .genome import Region, centred_span, fetch
from .model import Ensemble, TrackRequest
from .spec import check_positive_int
from .targets import Targets, TrackSelection, read_targets, select_tracks


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
def window(region, seq_length: int) -> tuple:
    """(start, end) of the model window centred on the region (chrom, start, end, ...), as
    basenji_predict_bed.py centres it (:func:`basenji2_fast.genome.centred_span`)."""
    return centred_span(region[1], region[2], seq_length)


def output_window(region, model) -> tuple:
    """(start, end) of the genomic span the output bins of the region's window cover: the
    window less ``crop_bins * bin_size`` bp each side; bin ``b`` covers ``[start + b * bin_size,
    start + (b + 1) * bin_size)``."""
    start = window(region, model.seq_length)[0] + model.spec.crop_bins * model.bin_size
    return start, start + model.n_bins * model.bin_size


def site_bins(model, site_length: Optional[int]) -> Tuple[int, int]:
    """The output bins ``[b0, b1)`` of a centred site of ``site_length`` bp (None: all bins).

    basenji_predict_bed.py keeps bins ``[n_bins/2 - S/2, n_bins/2 + S/2)``, S = site_length
    / bin_size; the site must be whole bins and centred exactly, so ``n_bins - S`` is even.
    """
    nb, bs = model.n_bins, model.bin_size
    if site_length is None:
        return 0, nb
    s = int(site_length)
    if s <= 0 or s % bs or s // bs > nb or (nb - s // bs) % 2:
        raise ValueError(f"site length {site_length}: must be a multiple of the bin size {bs} bp, at most "
                         f"{nb * bs} bp ({nb} bins), with a bin count of the same parity as {nb} so the site is "
                         "centred on the window")
    b0 = (nb - s // bs) // 2
    return b0, b0 + s // bs


def centred_stretch(seq_length: int, length: int, up: Optional[int] = None,
                    what: str = "stretch") -> Tuple[int, int]:
    """(first, length) of a stretch of the window that starts ``up`` bases before the window's
    centre ``L/2`` (default ``length // 2``: the stretch centred as basenji_sat_bed.py centres
    its ``-l`` stretch). ValueError (naming ``what``) when it is empty or leaves the window."""
    n = int(length)
    up = n // 2 if up is None else int(up)
    first = seq_length // 2 - up
    if n <= 0:
        raise ValueError(f"{what} length {n} must be >= 1")
    if first < 0 or first + n > seq_length:
        raise ValueError(f"{what} [{first}, {first + n}) does not fit in the {seq_length:,}-bp window")
    return first, n


def stretch_span(region, seq_length: int, first: int, length: int) -> Tuple[int, int]:
    """Genomic (start, end) of the stretch ``[first, first + length)`` of the region's window
    in the region's orientation: for a ``-`` strand region the window is reverse-complemented,
    so stretch index ``k`` is genomic position ``end - 1 - k``."""
    w0 = window(region, seq_length)[0]
    if len(region) > 4 and region[4] == "-":
        end = w0 + seq_length - first
        return end - length, end
    return w0 + first, w0 + first + length


def center_bins(n_bins: int) -> Tuple[int, int]:
    """The output bins ``[b0, b1)`` called the centre: ``n_bins // 2`` and the bin after it, the
    two bins basenji_sat_bed.py's ``center`` statistic sums (for an even ``n_bins`` they start
    at the window's midpoint)."""
    return n_bins // 2, n_bins // 2 + 2


BIN_CHOICES = "center, all, or A-B (0-based, end-exclusive)"


class BinChoice(NamedTuple):
    """Which output bins, as a user names them (:func:`parse_bins`): ``text`` is ``center``,
    ``all`` or ``A-B``; ``span`` is (A, B) for the last; :meth:`indices` checks it against a model."""

    text: str
    span: Optional[Tuple[int, int]] = None

    def indices(self, n_bins: int) -> Optional[List[int]]:
        """The bins named, for a model of ``n_bins`` output bins (None: all of them); ValueError
        when ``A-B`` leaves ``0 .. n_bins - 1``."""
        if self.text == "all":
            return None
        if self.span is None:
            return list(range(*center_bins(n_bins)))
        a, b = self.span
        if b > n_bins:
            raise ValueError(f"bins {self.text!r}: bin {b - 1} does not exist; this model has {n_bins} output bins "
                             f"(0..{n_bins - 1})")
        return list(range(a, b))


def parse_bins(text) -> BinChoice:
    """``center`` (:func:`center_bins`), ``all``, or ``A-B``: bins ``A .. B-1`` (0-based, end
    excluded, as BED) -> :class:`BinChoice`; ValueError naming the text for any other form or
    ``A >= B``. (A BinChoice passes unchanged.)"""
    if isinstance(text, BinChoice):
        return text
    t = str(text).strip()
    if t in ("center", "all"):
        return BinChoice(t)
    a, sep, b = t.partition("-")
    if not sep or not a.strip().isdigit() or not b.strip().isdigit():
        raise ValueError(f"bins {text!r}: expected {BIN_CHOICES}")
    a, b = int(a), int(b)
    if a >= b:
        raise ValueError(f"bins {text!r}: A-B names bins A..B-1, so A must be less than B")
    return BinChoice(t, (a, b))


# ----------------------------------------------------------------------------------------------
# Tracks and heads
# ----------------------------------------------------------------------------------------------
def resolve_tracks(model, head: Optional[str] = None, tracks=None,
                   targets: Union[None, str, os.PathLike, Targets] = None) -> Tuple[str, TrackSelection]:
    """Which head, and which of its columns, to compute.

    Parameters
    ----------
    head : head name, or None: the model's first head; with a targets file, the one head
        whose output count equals the file's row count when there is exactly one such head
        (so ``targets_mouse.txt`` picks a merged model's mouse head)
    tracks : None, a selector string, a sequence of int, or a TrackSelection (or any object
        with ``columns`` and optionally ``identifiers``, ``labels``, ``strand_pair``)
        See :func:`basenji2_fast.targets.select_tracks`; integers are rows of the targets
        file (head columns without one).
    targets : path of a basenji targets file, a :class:`~basenji2_fast.targets.Targets`, or None

    Returns
    -------
    (head name, TrackSelection)
    """
    if targets is not None and not isinstance(targets, Targets):
        targets = read_targets(targets)
    if head is None:
        head = model.head_names[0]
        if targets is not None:
            fits = [n for n in model.head_names if model.spec.heads[n].tracks == len(targets)]
            if len(fits) == 1:
                head = fits[0]
    if head not in model.spec.heads:
        raise ValueError(f"no head {head!r}; this model has {model.head_names}")
    n_out = model.spec.heads[head].tracks
    if hasattr(tracks, "columns") and not isinstance(tracks, TrackSelection):  # any (columns, identifiers, ...)
        cols = [int(c) for c in tracks.columns]
        pair = getattr(tracks, "strand_pair", None)
        tracks = TrackSelection(cols, list(getattr(tracks, "identifiers", None) or [f"t{c}" for c in cols]),
                                list(getattr(tracks, "labels", None) or [""] * len(cols)),
                                None if pair is None else [int(p) for p in pair], cols)
    if isinstance(tracks, TrackSelection):  # made elsewhere: checked here
        if not tracks.columns:
            raise ValueError("no tracks selected")
        bad = [c for c in tracks.columns if not 0 <= c < n_out]
        if bad:
            raise ValueError(f"track column {bad[0]} out of range for head {head!r} with {n_out} tracks")
        for what, seq in (("identifiers", tracks.identifiers), ("labels", tracks.labels),
                          ("strand_pair", tracks.strand_pair)):
            if seq is not None and len(seq) != len(tracks):
                raise ValueError(f"{len(seq)} track {what} for {len(tracks)} tracks")
        bad = [p for p in tracks.strand_pair or () if not 0 <= p < len(tracks)]
        if bad:
            raise ValueError(f"strand_pair position {bad[0]} out of range for {len(tracks)} selected tracks")
        return head, tracks
    return head, select_tracks(targets, tracks, n_out)


MULTI_HEADS = ("both", "all")


def _keys(value) -> List[str]:
    return [k for k in value if k is not None] if isinstance(value, dict) else []


def head_names(model, head, named=()) -> tuple:
    """(names, multi): the heads a ``head`` argument asks for.

    ``head``: None, a head name, ``"both"``/``"all"``, ``"a,b"`` or a list of names.
    ``named``: heads named by per-head targets/tracks (``HEAD=``): with ``head`` None they
    choose the heads. ``multi`` is False for the single-head path (names is ``[name]``, or
    ``[None]`` for the model's default head).
    """
    known = list(model.head_names)
    if head is None:
        chosen = [h for h in known if h in set(named)]
        if len(chosen) > 1:
            names, multi = chosen, True
        else:
            return (chosen or [None]), False
    elif isinstance(head, str) and head.strip() in MULTI_HEADS:
        if len(known) < 2:
            raise ValueError(f"head {head!r}: this model has one head ({known[0]})")
        names, multi = known, True
    elif isinstance(head, str) and "," not in head:
        names, multi = [head.strip()], False
    else:
        names = [h.strip() for h in head.split(",") if h.strip()] if isinstance(head, str) else [str(h) for h in head]
        multi = True
        if not names:
            raise ValueError(f"head {head!r}: no head named")
    for n in names:
        if n not in known:
            raise ValueError(f"no head {n!r}; this model has {known}")
        if os.sep in n or n in (".", ".."):
            raise ValueError(f"head {n!r}: not usable as a folder name")
    if len(set(names)) != len(names):
        raise ValueError(f"head {head!r}: a head is named twice")
    return names, multi


def plan_heads(model, head=None, tracks=None, targets=None) -> tuple:
    """Resolve ``head`` and per-head ``targets`` / ``tracks`` into (multi, [TrackRequest]).

    Parameters
    ----------
    head : see :func:`head_names`
    tracks : None, a selector (applies to every head), or a dict {head: selector} whose
        ``None`` key is the selector for heads not named
    targets : None, a targets file (path or Targets; goes to the requested head whose output
        count equals its rows), or a dict {head: targets} (``None`` key: a plain file)

    Returns
    -------
    (multi: bool, list of TrackRequest in the model's head order for "both")

    Raises
    ------
    ValueError
        An unknown head, a per-head value for a head that is not predicted, or a plain targets
        file that fits no requested head or several.
    """
    named = set(_keys(tracks)) | set(_keys(targets))
    for n in named:
        if n not in model.head_names:
            raise ValueError(f"targets/tracks given for head {n!r}; this model has {list(model.head_names)}")
    names, multi = head_names(model, head, named)
    stray = named - set(names)
    if stray:
        raise ValueError(f"targets/tracks given for head {sorted(stray)[0]!r}, which is not predicted "
                         f"(heads: {', '.join(n or model.head_names[0] for n in names)})")
    tr = dict(tracks) if isinstance(tracks, dict) else {None: tracks}
    tg = dict(targets) if isinstance(targets, dict) else {None: targets}
    plain_tracks, plain_targets = tr.pop(None, None), tg.pop(None, None)
    per_targets = {n: tg.get(n if n is not None else model.head_names[0]) for n in names}
    if plain_targets is not None:
        if len(names) == 1:
            if per_targets[names[0]] is not None:
                raise ValueError("two targets files for one head")
            per_targets[names[0]] = plain_targets
        else:
            t = plain_targets if isinstance(plain_targets, Targets) else read_targets(plain_targets)
            free = [n for n in names if per_targets[n] is None]
            fits = [n for n in free if model.spec.heads[n].tracks == len(t)]
            if len(fits) != 1:
                raise ValueError(f"{t.path}: {len(t)} rows fit {'no' if not fits else 'more than one'} of the heads "
                                 f"{', '.join(f'{n} ({model.spec.heads[n].tracks})' for n in free)}; "
                                 f"name its head: -t HEAD={t.path}")
            per_targets[fits[0]] = t
    reqs = [TrackRequest(n, tr.get(n if n is not None else model.head_names[0], plain_tracks), per_targets[n])
            for n in names]
    return multi, reqs


def engine_tracks(model, head: str, sel: TrackSelection, rc: bool) -> tuple:
    """(head columns to compute, strand pairs) as :meth:`Model.predict` takes them: None for
    every column in order (the engine then computes the whole head); the pairs only with rc,
    refused where a stranded track's partner is not selected (TrackSelection.rc_strand_pair)."""
    pair = sel.rc_strand_pair() if rc else None
    return (None if sel.is_all(model.spec.heads[head].tracks) else sel.columns), pair


# ----------------------------------------------------------------------------------------------
# The batched ensemble-predict loop
# ----------------------------------------------------------------------------------------------
def window_codes(fasta, region, seq_length: int, strand: str = "+", what: Optional[str] = None) -> np.ndarray:
    """uint8 codes [seq_length] of the window centred on ``region`` (:func:`window`; N off the
    chromosome), reverse-complemented for ``strand="-"``."""
    chrom = region[0]
    codes = encode(fetch(fasta, chrom, *window(region, seq_length)),
                   what=what or f"{chrom}:{region[1]}-{region[2]}")
    return revcomp(codes) if strand == "-" else codes


def iter_windows(fasta, regions: List[Region], seq_length: int, batch_size: int, progress: bool = False,
                 desc: str = "predict") -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(first region, uint8 codes [batch, seq_length])``: the window centred on each
    region (:func:`window`, N off the chromosome), ``batch_size`` regions at a time, in order."""
    batch_size = check_positive_int("batch_size", batch_size)
    with tqdm(total=len(regions), unit="region", disable=not progress, desc=desc) as bar:
        for b0 in range(0, len(regions), batch_size):
            batch = regions[b0:b0 + batch_size]
            yield b0, np.stack([window_codes(fasta, r, seq_length) for r in batch])
            bar.update(len(batch))


def predict(model, codes: np.ndarray, sels: Dict[str, TrackSelection], ensemble: Ensemble) -> Dict[str, np.ndarray]:
    """codes uint8 [B, L] -> {head: float32 [B, n_bins, tracks]}: every head of ``sels`` from
    one trunk pass per window and ensemble member; with ``rc`` the strand-paired tracks swap
    in the reverse-complement passes (basenji's ``SwitchReverse``)."""
    req = {h: engine_tracks(model, h, sel, ensemble.rc) for h, sel in sels.items()}
    return model.predict(codes, head=list(sels), tracks={h: c for h, (c, _) in req.items()},
                         strand_pair={h: p for h, (_, p) in req.items()}, **ensemble.options())


def iter_predictions(model, fasta, regions: List[Region], sels: Dict[str, TrackSelection], ensemble: Ensemble,
                     progress: bool = False) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
    """Yield ``(first region, {head: float32 [batch, n_bins, tracks]})`` batch by batch, in
    order: the window centred on each region, ``ensemble.batch_size`` windows at a time."""
    for b0, codes in iter_windows(fasta, regions, model.seq_length, ensemble.batch_size, progress):
        yield b0, predict(model, codes, sels, ensemble)
