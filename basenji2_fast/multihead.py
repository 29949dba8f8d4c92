"""Several heads in one run: ``--head human|mouse|both`` and per-head track selections.

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
from typing import List, NamedTuple, Optional

MULTI_HEADS = ("both", "all")


class HeadRequest(NamedTuple):
    """One head to predict: its name (None: the single-head default rule of
    :func:`basenji2_fast.regions.resolve_tracks`), its targets (path, Targets or None) and its
    track selector."""

    head: Optional[str]
    targets: object
    tracks: object


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
    """Resolve ``head`` and per-head ``targets`` / ``tracks`` into (multi, [HeadRequest]).

    Parameters
    ----------
    head : see :func:`head_names`
    tracks : None, a selector (applies to every head), or a dict {head: selector} whose
        ``None`` key is the selector for heads not named
    targets : None, a targets file (path or Targets; goes to the requested head whose output
        count equals its rows), or a dict {head: targets} (``None`` key: a plain file)

    Returns
    -------
    (multi: bool, list of HeadRequest in the model's head order for "both")

    Raises
    ------
    ValueError
        An unknown head, a per-head value for a head that is not predicted, or a plain targets
        file that fits no requested head or several.
    """
    from .targets import Targets, read_targets

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
    reqs = [HeadRequest(n, per_targets[n], tr.get(n if n is not None else model.head_names[0], plain_tracks))
            for n in names]
    return multi, reqs
