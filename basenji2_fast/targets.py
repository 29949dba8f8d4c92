"""basenji targets files, and choosing which head columns (tracks) to compute.

A targets file is tab-separated with a header::

    index  genome  identifier  file  clip  scale  sum_stat  description  [clip_soft  strand_pair]

``genome``, ``clip_soft`` and ``strand_pair`` are optional; files written by pandas may
leave the leading column's name empty (``"\\tidentifier\\tfile..."``), or omit it from the
header altogether (one field fewer in the header than in the rows). basenji reads the file
with ``pandas.read_csv(..., index_col=0)``; this reader needs no pandas.

Which head column a row means (:func:`select_tracks`):

- as many rows as the head has outputs: the row position. (``index`` is not a column
  number in general: in the published mouse file it runs 5313..6955, a global index
  over both species.)
- fewer rows than outputs: the row's ``index`` (basenji slices the model output with
  ``tf.gather(preds, index)``; e.g. a file listing 5 of 12 tracks).
- more rows than outputs: an error (the file is for another model).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

#: Columns every targets file has (beside the index); ``description`` may be missing
#: in hand-made files and then reads as "".
REQUIRED_COLUMNS = ("identifier",)
_FLOAT_COLUMNS = ("clip", "clip_soft", "scale")
_INT_COLUMNS = ("genome",)


@dataclass
class Targets:
    """The rows of a targets file, one entry per row in file order.

    Attributes
    ----------
    path : str
        Where it was read from (for messages).
    index : np.ndarray, int64 [rows]
        The ``index`` column (the row position when the file has none).
    identifier, description, file, sum_stat : list of str [rows]
        ``description`` starts with the assay (``DNASE:``, ``ATAC:``, ``CHIP:``, ``CAGE:``).
        ``file`` / ``sum_stat`` are "" when the file lacks the column.
    genome : np.ndarray int64 [rows] or None
    clip, scale, clip_soft : np.ndarray float64 [rows] or None (column absent)
    strand_pair : np.ndarray int64 [rows] or None
        The ``strand_pair`` column as written: the ``index`` value of each row's
        opposite-strand partner (itself for unstranded tracks), or None without the column.
    columns : dict str -> list of str
        Every column as raw text (including ones this reader does not interpret).
    lines : list of int
        The 1-based line number of each row, for messages.
    """

    path: str
    index: np.ndarray
    identifier: List[str]
    description: List[str]
    file: List[str]
    sum_stat: List[str]
    genome: Optional[np.ndarray] = None
    clip: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    clip_soft: Optional[np.ndarray] = None
    strand_pair: Optional[np.ndarray] = None
    columns: Dict[str, List[str]] = field(default_factory=dict)
    lines: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.identifier)

    def __repr__(self) -> str:
        pairs = "" if self.strand_pair is None else ", strand pairs"
        return f"<Targets {self.path}: {len(self)} rows{pairs}>"

    def pair_rows(self) -> Optional[np.ndarray]:
        """Row position of each row's strand partner: int64 [rows], -1 where the partner's
        ``index`` is not in this file; None without a ``strand_pair`` column."""
        if self.strand_pair is None:
            return None
        row_of = {int(v): r for r, v in enumerate(self.index)}
        return np.array([row_of.get(int(p), -1) for p in self.strand_pair], np.int64)


def read_targets(path: PathLike) -> Targets:
    """Read a basenji targets file.

    Parameters
    ----------
    path : str or PathLike
        Tab-separated, header first; blank lines are skipped, ``\\r\\n`` line ends accepted.

    Returns
    -------
    Targets

    Raises
    ------
    ValueError
        For an empty file, a missing ``identifier`` column, a row with the wrong number of
        fields, or a non-numeric ``index`` / ``genome`` / ``clip`` / ``scale`` /
        ``clip_soft`` / ``strand_pair``; the message names the file and the line.
    FileNotFoundError
        If the file does not exist.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as fh:
        raw = [(n, line.rstrip("\r\n")) for n, line in enumerate(fh, 1)]
    raw = [(n, line) for n, line in raw if line.strip()]
    if not raw:
        raise ValueError(f"{path}: empty targets file (expected a header line)")
    header_line, header = raw[0]
    names = header.split("\t")
    rows = [(n, line.split("\t")) for n, line in raw[1:]]
    # Where the row index lives: a column named "index", an unnamed leading column
    # (pandas' to_csv of an unnamed index), or, when the header is one field short of
    # the rows, a leading column with no header entry at all (pandas' index_col=0 reads
    # all three the same way).
    if names[0] not in ("", "index") and rows and len(rows[0][1]) == len(names) + 1:
        names = ["index"] + names
    elif names[0] in ("", "index"):
        names[0] = "index"
    has_index = names[0] == "index"
    for col in REQUIRED_COLUMNS:
        if col not in names:
            raise ValueError(f"{path}: line {header_line}: no {col!r} column in the header "
                             f"({', '.join(repr(n) for n in names)}); is this a basenji targets file?")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: line {header_line}: column {dup[0]!r} appears twice in the header")
    columns: Dict[str, List[str]] = {n: [] for n in names}
    lines = []
    for n, fields in rows:
        if len(fields) != len(names):
            raise ValueError(f"{path}: line {n}: {len(fields)} tab-separated fields, expected {len(names)} "
                             f"as in the header")
        for name, value in zip(names, fields):
            columns[name].append(value)
        lines.append(n)

    def parse(name: str, kind):
        if name not in columns:
            return None
        out = []
        for value, n in zip(columns[name], lines):
            try:
                # "5313.0" happens in files that went through a float column
                out.append(kind(float(value)) if kind is int and "." in value else kind(value))
            except ValueError:
                raise ValueError(f"{path}: line {n}: column {name!r}: {value!r} is not a number") from None
        return np.array(out, np.int64 if kind is int else np.float64)

    index = parse("index", int) if has_index else np.arange(len(lines), dtype=np.int64)
    seen: Dict[int, int] = {}
    for v, n in zip(index, lines):
        if int(v) in seen:
            raise ValueError(f"{path}: line {n}: index {int(v)} repeats line {seen[int(v)]}")
        seen[int(v)] = n
    strand_pair = parse("strand_pair", int)
    if strand_pair is not None:
        for v, n in zip(strand_pair, lines):
            if int(v) not in seen:
                raise ValueError(f"{path}: line {n}: strand_pair {int(v)} is no row's index (the partner's "
                                 f"index, or the row's own for an unstranded track)")
    blank = [""] * len(lines)
    t = Targets(path=path, index=index, identifier=list(columns["identifier"]),
                description=list(columns.get("description", blank)), file=list(columns.get("file", blank)),
                sum_stat=list(columns.get("sum_stat", blank)), genome=parse("genome", int),
                clip=parse("clip", float), scale=parse("scale", float), clip_soft=parse("clip_soft", float),
                strand_pair=strand_pair, columns=columns, lines=lines)
    return t


@dataclass
class TrackSelection:
    """Which head columns to compute, and how to name them.

    Attributes
    ----------
    columns : list of int [n]
        Head output columns, in output order.
    identifiers, labels : list of str [n]
        The targets file's ``identifier`` / ``description`` of each (``"t<column>"`` for
        both without a targets file).
    strand_pair : list of int [n] or None
        For each selected track, the position within the selection of its opposite-strand
        partner, or its own position when the partner is not selected (or the track is
        unstranded); None when the targets file has no ``strand_pair`` column. This is the
        ``strand_pair`` argument of :meth:`basenji2_fast.Model.predict`.
    rows : list of int [n]
        The targets file rows selected (= ``columns`` without a targets file).
    unpaired : list of int
        Positions of the selected stranded tracks whose partner is not selected (their
        ``strand_pair`` entry is their own position): a reverse-complement pass predicts such
        a track in its partner's column, which is not computed, so :meth:`rc_strand_pair`
        refuses them.
    source : str
        The targets file (for messages), or "" without one.
    """

    columns: List[int]
    identifiers: List[str]
    labels: List[str]
    strand_pair: Optional[List[int]] = None
    rows: List[int] = field(default_factory=list)
    unpaired: List[int] = field(default_factory=list)
    source: str = ""

    def rc_strand_pair(self) -> Optional[List[int]]:
        """``strand_pair`` for reverse-complement ensembles: a ValueError naming the first
        selected stranded track whose partner is left out (its values would otherwise depend
        on which other tracks are selected)."""
        if self.unpaired:
            i = self.unpaired[0]
            raise ValueError(f"{self.source}: track {self.identifiers[i]} (row {self.rows[i]}) is stranded but its "
                             f"strand partner is not selected: with --rc / rc=True select both strands "
                             f"({len(self.unpaired)} such track(s))")
        return self.strand_pair

    def __len__(self) -> int:
        return len(self.columns)

    def is_all(self, n_outputs: int) -> bool:
        """Whether this is every head column in order (the engine then computes the whole head)."""
        return self.columns == list(range(n_outputs))


def _row_columns(targets: Targets, n_outputs: int) -> List[int]:
    """The head column of every row (module docstring: row position, or ``index``)."""
    n = len(targets)
    if n > n_outputs:
        raise ValueError(f"{targets.path}: {n} targets but the head has {n_outputs} outputs; "
                         "is this the targets file of another model (or the other species' head)?")
    if n == n_outputs:
        return list(range(n))
    cols = [int(v) for v in targets.index]
    for c, line in zip(cols, targets.lines):
        if not 0 <= c < n_outputs:
            raise ValueError(f"{targets.path}: line {line}: index {c} is not a column of the head "
                             f"(0..{n_outputs - 1}); with fewer rows ({n}) than head outputs the index "
                             "column names the head columns")
    return cols


def _parse_ints(text: str) -> Optional[List[int]]:
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
        return None
    return [int(p) for p in parts]


def select_tracks(targets: Optional[Targets], selector: Union[None, str, Sequence[int]],
                  n_outputs: int) -> TrackSelection:
    """Resolve a ``--tracks`` selector against a targets file (or the bare head).

    Parameters
    ----------
    targets : Targets or None
        None: the rows are the head's columns ``0..n_outputs-1``, named ``t0``, ``t1``, ...
    selector : None, str, or a sequence of int
        - None: every row of the targets file (every head column without one);
        - comma-separated integers (or a sequence of int): row positions in the targets file
          (0-based, in the given order; head columns without a targets file);
        - otherwise comma-separated identifiers, if every one is an ``identifier`` of the file;
        - otherwise a regular expression searched (``re.search``) in each ``description``,
          e.g. ``"CAGE:.*K562"``, ``"^DNASE:"``; matching rows in file order.
    n_outputs : int
        How many outputs the head has.

    Returns
    -------
    TrackSelection

    Raises
    ------
    ValueError
        A targets file that does not fit the head, a row position out of range, a track
        selected twice, or a selector that matched nothing (the message says what was tried).
    """
    if targets is None:
        names = [f"t{c}" for c in range(n_outputs)]
        row_cols, ids, descs, pairs = list(range(n_outputs)), names, names, None
        what = f"the head's {n_outputs} columns"
    else:
        row_cols = _row_columns(targets, n_outputs)
        ids, descs, pairs, what = targets.identifier, targets.description, targets.pair_rows(), targets.path
    n_rows = len(row_cols)

    if selector is None:
        rows = list(range(n_rows))
    else:
        ints = None
        if isinstance(selector, str):
            text = selector.strip()
            if not text:
                raise ValueError("empty track selector")
            ints = _parse_ints(text)
        else:
            arr = np.asarray(list(selector))
            if arr.size and arr.dtype.kind not in "iu":
                raise ValueError(f"track selector: expected integers, got {list(selector)[:3]!r}...")
            ints, text = [int(v) for v in arr.ravel()], None
        if ints is not None:
            bad = [i for i in ints if not 0 <= i < n_rows]
            if bad:
                size = f"the head has {n_rows} tracks" if targets is None else f"{what} has {n_rows} rows"
                raise ValueError(f"track {bad[0]} out of range: {size} (0..{n_rows - 1})")
            rows = ints
        else:
            wanted = [p.strip() for p in text.split(",")]
            row_of = {}
            for r, ident in enumerate(ids):
                row_of.setdefault(ident, r)
            if all(w in row_of for w in wanted):
                rows = [row_of[w] for w in wanted]
            else:
                unknown = next(w for w in wanted if w not in row_of)
                try:
                    rx = re.compile(text)
                except re.error as e:
                    raise ValueError(f"track selector {text!r} is not integers, not identifiers of {what} "
                                     f"({unknown!r} is not one) and not a valid regular expression ({e})") from None
                rows = [r for r, d in enumerate(descs) if rx.search(d)]
                if not rows:
                    raise ValueError(f"track selector {text!r} matched nothing in {what}: not comma-separated "
                                     f"integers, not identifiers ({unknown!r} is not one), and as a regular "
                                     "expression it matched no description")
    if not rows:
        raise ValueError(f"no tracks selected from {what}")
    first: Dict[int, int] = {}
    for pos, r in enumerate(rows):
        if r in first:
            raise ValueError(f"track row {r} ({ids[r]}) selected twice (positions {first[r]} and {pos})")
        first[r] = pos
    strand_pair, unpaired = None, []
    if pairs is not None:
        # The partner's position in the selection; a partner left out pairs with itself, and
        # the track is marked unpaired (rc_strand_pair refuses it).
        strand_pair = [first.get(int(pairs[r]), pos) for pos, r in enumerate(rows)]
        unpaired = [pos for pos, r in enumerate(rows) if int(pairs[r]) != r and int(pairs[r]) not in first]
    return TrackSelection(columns=[row_cols[r] for r in rows], identifiers=[ids[r] for r in rows],
                          labels=[descs[r] for r in rows], strand_pair=strand_pair, rows=list(rows),
                          unpaired=unpaired, source=what)
