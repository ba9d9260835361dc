"""The labeler registry (detectron2's ``Registry`` idea): each ``liid label --method NAME`` is one ``Labeler``.

A labeler is registered once, by name, with everything ``liid label`` and the pipeline runner need to know about
it: its one-line summary (the ``--method`` help), the options it reads, its own click options, the inputs it
requires, whether it writes instances, which pipeline products it consumes, and the function that writes its
export. Adding a method is one module that calls ``register_labeler(Labeler(...))``::

    register_labeler(Labeler(name="my-method", summary="...", options={"dataset", "proposals"},
                             required={"dataset": "--dataset DATASET"}, inputs={"dataset", "proposals"},
                             run=my_run))

The built-in methods (``liid.labelers.builtin``) and the third-party ones of the ``liid.labelers`` entry-point
group (a module whose import registers, a callable that registers when called, or a ``Labeler``) are loaded
once, lazily, at the first access to the registry; importing ``liid.cli`` loads none of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from liid.errors import LiidError

if TYPE_CHECKING:
    import click

ENTRY_POINT_GROUP = "liid.labelers"
PRODUCTS = frozenset({"features", "dataset", "proposals", "cams", "model"})  # what a labeler may read of a run
EVERY_METHOD = frozenset({"method", "out", "overwrite"})  # the parameters of `liid label` that every method reads

RunFn = Callable[[dict[str, Any], Path, bool], "dict | None"]
CheckFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, eq=False, kw_only=True)
class Labeler:
    """One labeling method of ``liid label --method NAME``.

    ``options``: the click parameter names it reads beyond method/out/overwrite (any other given explicitly is
    refused); the names of ``extra_params`` are added to it. ``extra_params``: click options of its own that are
    not shared options of ``liid label`` (added to the command while the labeler is registered). ``required``:
    parameter name → how to give it (``"--proposals STORE"``), refused with one line when missing.
    ``instances``: whether it writes instances.json (else semantic PNGs only). ``inputs``: the pipeline products
    it reads (a subset of ``PRODUCTS``), for ``liid run`` to wire stage outputs. ``run(params, out, overwrite)``:
    writes the export from ``params`` (its ``options``' values, None for an option left unset) and returns the
    export summary, or None when OUT was up to date. ``extra_checks(params)``: method-specific validation run
    after the option check and before the required-input check, before any work.
    """

    name: str
    summary: str
    run: RunFn
    options: frozenset[str] = frozenset()
    extra_params: tuple[click.Option, ...] = ()
    required: Mapping[str, str] = field(default_factory=dict)
    instances: bool = True
    inputs: frozenset[str] = frozenset()
    extra_checks: CheckFn | None = None

    def __post_init__(self) -> None:
        """Normalise the collections (frozen, read-only) and refuse an inconsistent declaration in one line."""
        extra = tuple(self.extra_params)
        options = frozenset(self.options) | {p.name for p in extra}
        put = object.__setattr__  # a frozen dataclass: its fields are set once, here
        put(self, "extra_params", extra)
        put(self, "options", options)
        put(self, "required", MappingProxyType(dict(self.required)))
        put(self, "inputs", frozenset(self.inputs))
        where = f"labeler {self.name!r}"
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip() or " " in self.name:
            raise LiidError(f"labeler name {self.name!r}: a non-empty word without spaces")
        if not self.summary.strip() or "\n" in self.summary.strip():
            raise LiidError(f"{where}: its summary must be one non-empty line")
        if not callable(self.run) or (self.extra_checks is not None and not callable(self.extra_checks)):
            raise LiidError(f"{where}: run (and extra_checks, when given) must be callables")
        if any(p.name is None or not p.opts for p in extra):
            raise LiidError(f"{where}: every extra parameter needs a name and an option flag")
        checks = (("reads", options & EVERY_METHOD, "method, out and overwrite are read by every method"),
                  ("requires", set(self.required) - options, "a required parameter must be one of its options"),
                  ("reads the inputs", self.inputs - PRODUCTS, f"the products are {', '.join(sorted(PRODUCTS))}"),
                  ("reads the inputs", self.inputs - options, "an input must be one of its options"))
        for verb, bad, why in checks:
            if bad:
                raise LiidError(f"{where} {verb} {', '.join(sorted(bad))}: {why}")


class Registry(Mapping[str, Labeler]):
    """Name → ``Labeler``, in registration order; the built-in and entry-point labelers are loaded at the first
    access (also the first registration, so a duplicate of one of them is refused)."""

    def __init__(self) -> None:
        """An empty registry; nothing is loaded until the first access."""
        self._items: dict[str, Labeler] = {}
        self._state = "unloaded"  # "loading" while the built-ins and plugins register, then "loaded"
        self._plugin_error: LiidError | None = None

    def _ensure_loaded(self) -> None:
        """Load the built-ins and the entry-point plugins once; a broken plugin's error is raised at every access
        (it does not silently vanish), the labelers that did load stay registered."""
        if self._state == "unloaded":
            self._state = "loading"
            try:
                import liid.labelers.builtin  # noqa: F401 - its import registers the built-in methods
            except BaseException:
                self._state = "unloaded"
                raise
            self._plugin_error = _load_plugins()
            self._state = "loaded"
        if self._state == "loaded" and self._plugin_error is not None:
            raise self._plugin_error

    def __getitem__(self, name: str) -> Labeler:
        """The labeler ``name`` (KeyError when unknown, as a mapping does; ``get_labeler`` for the one line)."""
        self._ensure_loaded()
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        """The names, in registration order (a copy: registering while iterating is safe)."""
        self._ensure_loaded()
        return iter(list(self._items))

    def __len__(self) -> int:
        """How many labelers are registered."""
        self._ensure_loaded()
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered."""
        self._ensure_loaded()
        return name in self._items

    def register(self, labeler: Labeler, *, replace: bool = False) -> Labeler:
        """Add ``labeler``; a name already registered is refused unless ``replace``, and so is an extra option
        that another labeler (or ``liid label`` itself) already has under the same name or flag."""
        if not isinstance(labeler, Labeler):
            raise LiidError(f"register_labeler: a Labeler, not {type(labeler).__name__}")
        self._ensure_loaded()
        old = self._items.get(labeler.name)
        if old is not None and not replace:
            raise LiidError(f"labeler {labeler.name!r} is already registered (pass replace=True to replace it)")
        _check_extra_params(labeler, [lab for lab in self._items.values() if lab.name != labeler.name])
        self._items[labeler.name] = labeler
        return labeler

    def unregister(self, name: str) -> Labeler:
        """Remove and return the labeler ``name`` (tests, or a plugin that replaces a method)."""
        self._ensure_loaded()
        if name not in self._items:
            raise _unknown(name, list(self._items))
        return self._items.pop(name)

    def pop(self, name: str, *default: Any) -> Labeler | Any:
        """Remove and return the labeler ``name``, or ``default`` when it is not registered (as ``dict.pop``)."""
        self._ensure_loaded()
        if name not in self._items and default:
            return default[0]
        return self.unregister(name)

    def get_labeler(self, name: str) -> Labeler:
        """The labeler ``name``; an unknown one is one line naming the closest registered name."""
        self._ensure_loaded()
        if name not in self._items:
            raise _unknown(name, list(self._items))
        return self._items[name]


def _unknown(name: str, names: list[str]) -> LiidError:
    """The one-line error of an unregistered name, with the closest registered one (difflib)."""
    if not names:
        return LiidError(f"unknown labeler {name!r}: no labeler is registered")
    closest = difflib.get_close_matches(str(name), names, n=1, cutoff=0.0)[0]
    return LiidError(f"unknown labeler {name!r}; the closest registered one is {closest!r} "
                     f"(registered: {', '.join(names)})")


RESERVED: list[click.Parameter] = []  # the options of `liid label` itself (``reserve_options``)


def reserve_options(params: Iterable[click.Parameter]) -> None:
    """Declare the options of ``liid label`` itself, which no labeler's ``extra_params`` may redefine: called by
    that command when it is defined (the command sits above this registry, so it tells it, not the other way
    round); the labelers registered before are checked then."""
    RESERVED[:] = list(params)
    for lab in list(LABELERS._items.values()):
        _check_extra_params(lab, [o for o in LABELERS._items.values() if o.name != lab.name])


def _check_extra_params(labeler: Labeler, others: Iterable[Labeler]) -> None:
    """Refuse an extra option whose name or flag is a shared option of ``liid label`` or another labeler's
    (different) option: click would silently let one shadow the other."""
    if not labeler.extra_params:
        return
    taken: dict[str, tuple[str, click.Parameter]] = {}
    for p in RESERVED:
        for key in (p.name, *p.opts, *p.secondary_opts):
            taken[key] = ("liid label", p)
    for other in others:
        for p in other.extra_params:
            for key in (p.name, *p.opts, *p.secondary_opts):
                taken.setdefault(key, (f"labeler {other.name!r}", p))
    for p in labeler.extra_params:
        for key in (*p.opts, *p.secondary_opts, p.name):
            if key in taken and taken[key][1] is not p:
                what = key if key.startswith("-") else f"{max(p.opts, key=len)} (parameter name {key!r})"
                raise LiidError(f"labeler {labeler.name!r}: its option {what} is already an option of "
                                f"{taken[key][0]} (reuse that click.Option object or rename it)")


def _load_plugins() -> LiidError | None:
    """Import every entry point of the ``liid.labelers`` group; the first failure as one line naming it."""
    from importlib.metadata import entry_points

    errors: list[LiidError] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, Labeler):
                if LABELERS._items.get(obj.name) is not obj:
                    LABELERS.register(obj)
            elif callable(obj) and not isinstance(obj, ModuleType):
                obj()
        except Exception as e:  # noqa: BLE001 - any failure of third-party code becomes the one line
            reason = " ".join(str(e).split()) or type(e).__name__
            errors.append(LiidError(f"labeler plugin {ep.name!r} (entry point {ep.value!r} of the group "
                                    f"{ENTRY_POINT_GROUP}) failed to load: {reason}"))
    if not errors:
        return None
    more = f" (and {len(errors) - 1} more broken plugins)" if len(errors) > 1 else ""
    return LiidError(f"{errors[0]}{more}")


LABELERS = Registry()


def register_labeler(labeler: Labeler, *, replace: bool = False) -> Labeler:
    """Register ``labeler`` under its name (a duplicate name is one-line ``LiidError`` unless ``replace``);
    returns it, so a module can write ``LABELER = register_labeler(Labeler(...))``."""
    return LABELERS.register(labeler, replace=replace)


def unregister_labeler(name: str) -> Labeler:
    """Remove the labeler ``name`` and return it (a test's cleanup)."""
    return LABELERS.unregister(name)


def get_labeler(name: str) -> Labeler:
    """The registered labeler ``name``; an unknown name is a one-line ``LiidError`` naming the closest one."""
    return LABELERS.get_labeler(name)


class NameView(Sequence[str]):
    """The registered labelers' names, read live at each use (``liid.labelers.METHODS``: a labeler registered
    later is in it too)."""

    def __getitem__(self, i):  # type: ignore[override]
        """The ``i``-th registered name (or a slice of them)."""
        return tuple(LABELERS)[i]

    def __len__(self) -> int:
        """How many labelers are registered."""
        return len(LABELERS)

    def __iter__(self) -> Iterator[str]:
        """The names, in registration order."""
        return iter(LABELERS)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered."""
        return name in LABELERS

    def __repr__(self) -> str:
        """As the tuple of names it stands for."""
        return repr(tuple(LABELERS))


def extra_params() -> list[click.Parameter]:
    """The registered labelers' own click options, each once, in registration order (for ``liid label``)."""
    seen: dict[int, click.Parameter] = {}
    for lab in LABELERS.values():
        for p in lab.extra_params:
            seen.setdefault(id(p), p)
    return list(seen.values())
