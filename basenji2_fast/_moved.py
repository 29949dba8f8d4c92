"""Module paths the package had before its layers were drawn (issue 14), kept importable.

``import basenji2_fast.regions`` (and the others in :data:`MOVED`) still works: it warns with
a DeprecationWarning naming the new places and gives a stand-in module whose names are
looked up in those modules, in order. New code imports the new paths.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

PACKAGE = __name__.rpartition(".")[0]

#: old module name -> the modules (relative to the package) that hold its names now, in order.
MOVED = {
    "regions": ("workflows.regions", "windows", "genome"),
    "genome_tiling": ("workflows.genome_tiling", "spec"),
    "variants": ("workflows.variants",),
    "ism": ("workflows.ism",),
    "embed": ("workflows.embed",),
    "heads": ("workflows.heads", "coverage"),
    "evaluate": ("workflows.evaluate",),
    "orthologs": ("workflows.orthologs",),
    "distributed": ("runner", "cli", "cli_options"),
    "multihead": ("windows",),
}

#: names that changed on the way: (old module, old name) -> (new module, new name).
RENAMED = {
    ("multihead", "HeadRequest"): ("model", "TrackRequest"),  # fields (head, tracks, targets)
}


class MovedModule(types.ModuleType):
    """The stand-in for an old module path: attribute look-ups go to the new modules."""

    def __init__(self, name: str, targets):
        super().__init__(name)
        self.__moved_to__ = [f"{PACKAGE}.{t}" for t in targets]

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        renamed = RENAMED.get((self.__name__.rpartition(".")[2], name))
        if renamed is not None:
            warnings.warn(f"{self.__name__}.{name} is now {PACKAGE}.{renamed[0]}.{renamed[1]}", DeprecationWarning,
                          stacklevel=2)
            return getattr(importlib.import_module(f"{PACKAGE}.{renamed[0]}"), renamed[1])
        for target in self.__moved_to__:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (it moved to "
                             f"{', '.join(self.__moved_to__)})")

    def __dir__(self):
        return sorted({n for t in self.__moved_to__ for n in dir(importlib.import_module(t))})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return MovedModule(spec.name, MOVED[spec.name.rpartition(".")[2]])

    def exec_module(self, module):
        new = ", ".join(f"{PACKAGE}.{t}" for t in MOVED[module.__name__.rpartition(".")[2]])
        warnings.warn(f"{module.__name__} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
