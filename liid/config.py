"""The pipeline's config: one schema for every stage, read from the commands' own options (detectron2's lesson).

A config is a two-level mapping ``SECTION: {KEY: value}`` (YAML on disk). Each section but ``RUN``, ``DATASET``
and a few of the runner's own keys *is* a ``liid`` command: its keys are that command's options (``--delta`` of
``liid build-graph`` is ``GRAPH.DELTA``, ``--no-flip`` of ``liid train-mil`` is ``MIL.NO_FLIP``), with the
command's default, its validation (the click type: ranges, choices, finite floats) and its help text. Nothing is
declared twice: a new option of a command is a new config key, and ``liid run`` passes it on as that option.
The options that wire one stage's output into the next (``--out``, ``--proposals``, ``--cams`` ...) are the
runner's, not the config's.

``KEY VALUE`` overrides (``MIL.EPOCHS 3 GRAPH.DELTA 5``) are parsed as YAML scalars and validated like the file.
``_BASE_: other.yaml`` (relative to the file) merges another config under this one, as in detectron2.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from liid.errors import LiidError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the shipped configs (liid/configs/*.yaml)
BASE_KEY = "_BASE_"
OUT_PLACEHOLDER = "{OUT}"  # in a string value: the run's output folder (e.g. "{OUT}/cls/checkpoint.pt")
TRAIN_PLACEHOLDER = "{TRAIN}"  # in DATASET.TEST: the training dataset (another split of the same VOC root)
PLACEHOLDERS = (OUT_PLACEHOLDER, TRAIN_PLACEHOLDER)


@dataclass(frozen=True)
class SectionSpec:
    """A config section: the ``liid`` command whose options are its keys (minus the ones the runner wires),
    and keys of the runner's own (click options that belong to no command)."""

    name: str
    help: str
    command: str | None = None
    wired: tuple[str, ...] = ()  # parameter names the runner sets from other stages (not config keys)
    own: tuple[click.Option, ...] = ()


def _opt(name: str, default: Any, help: str, type: Any = None, multiple: bool = False) -> click.Option:
    """One of the runner's own keys, declared as a click option so that it validates like a command's."""
    return click.Option([f"--{name}"], default=default, type=type, help=help, multiple=multiple,
                        show_default=True)


_IO = ("dataset", "out", "overwrite", "resume", "split", "images_dir")

SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("RUN", "The run as a whole.", own=(
        _opt("output-dir", "liid_out", "Folder of the run: one subfolder per stage, config.yaml, run.log, "
             "metrics.json, report.html (--out overrides it)."),
        _opt("device", None, "Default device of every stage that takes one: auto (null), cpu, cuda or cuda:N."),
        _opt("workers", 2, "Default worker processes of the stages that take --workers.", click.IntRange(0)),
        _opt("plugins", [], "Python modules imported before the run (e.g. a module that registers a labeler).",
             multiple=True),
    )),
    SectionSpec("DATASET", "What the run trains on and is evaluated on.", own=(
        _opt("synthetic", False, "Generate the embedded synthetic dataset (section SYNTHETIC) under OUT/synthetic "
             "and use its train split for training and its val split for evaluation.", click.BOOL),
        _opt("train", None, "Training images with image labels: a VOC root, a COCO instances JSON, an image folder "
             "or a registered name (liid/datasets/registry.py)."),
        _opt("train-split", None, "VOC roots: the image set (e.g. train_aug)."),
        _opt("train-images", None, "COCO JSONs: the images folder (default: found beside the JSON)."),
        _opt("test", None, "Held-out images with ground truth for the segmenter's evaluation (null: none)."),
        _opt("test-split", None, "VOC roots: the held-out image set (e.g. val)."),
        _opt("test-images", None, "COCO JSONs: the held-out images folder."),
    )),
    SectionSpec("SYNTHETIC", "`liid make-synthetic` (with DATASET.SYNTHETIC true).", "make-synthetic", _IO),
    SectionSpec("PROPOSALS", "`liid proposals`: built-in selective search, or an import (--method mcg-mat, "
                "mcg-boxes, prm-json, coco-results).",
                "proposals", _IO + ("workers",)),
    SectionSpec("FILTER", "`liid filter-proposals`: area limits, near-duplicates, the best TOP per image.",
                "filter-proposals", _IO + ("store",)),
    SectionSpec("CLS", "`liid train-cls`: the multi-label classifier whose CAMs give L_Att's targets.",
                "train-cls", _IO + ("device", "workers")),
    SectionSpec("MIL", "`liid train-mil`: the MIL network of LIID section 4 (eq. 9).", "train-mil",
                _IO + ("proposals", "cams", "device", "workers")),
    SectionSpec("EXTRACT", "`liid extract`: features and probabilities of every proposal.", "extract",
                _IO + ("proposals", "mil", "device", "workers")),
    SectionSpec("GRAPH", "`liid build-graph`: the kNN graph with the classes as terminals (eq. 10).",
                "build-graph", _IO + ("store",)),
    SectionSpec("CUT", "`liid solve-cut`: the exact multiway cut (eq. 11).", "solve-cut",
                _IO + ("graph_dir", "workers")),
    SectionSpec("EXPORT", "`liid export`: COCO instances JSON and VOC-palette PNGs of the cut.", "export",
                _IO + ("cut", "proposals", "features")),
    SectionSpec("LABELER", "`liid label`, when METHOD is not liid: the labeler that replaces the LIID stages "
                "(mil ... export). Its inputs come from the run (features, proposals, dataset, the CLS "
                "classifier as --cams) unless given here.", "label",
                _IO + ("features", "proposals", "device", "method"), own=(
                    _opt("method", "liid", "liid (the graph and the cut) or a labeler of `liid label --method`."),
                    _opt("baselines", ["mil-argmax", "oracle"], "Labelers run and evaluated beside the main one "
                         "(oracle needs ground-truth instances; skipped on a dataset without them).",
                         multiple=True),
                )),
    SectionSpec("EVAL", "`liid evaluate`: every labeling against the training images' ground truth.", "evaluate",
                _IO + ("pred", "json_file")),
    SectionSpec("SEGMENTER", "The segmenter trained on the pseudo-labels.", own=(
        _opt("name", "maskrcnn", "maskrcnn (section MASKRCNN, on instances.json), deeplab (section DEEPLAB, on "
             "the semantic PNGs) or none.", click.Choice(("maskrcnn", "deeplab", "none"))),
    )),
    SectionSpec("MASKRCNN", "`liid train-maskrcnn` (SEGMENTER.NAME maskrcnn).", "train-maskrcnn",
                _IO + ("train_json", "eval_dataset", "eval_split", "eval_images", "device", "workers")),
    SectionSpec("DEEPLAB", "`liid train-deeplab` (SEGMENTER.NAME deeplab).", "train-deeplab",
                _IO + ("masks", "eval_split", "device", "workers")),
    SectionSpec("REPORT", "OUT/report.html.", own=(
        _opt("images", 4, "Training images drawn with their proposals, labelings and ground truth.",
             click.IntRange(0)),
        _opt("inspect", 2, "Proposals whose graph neighbourhood is drawn (`liid inspect`).", click.IntRange(0)),
        _opt("seed", 0, "Seed of the images and proposals drawn.", click.IntRange(0)),
    )),
)


def key_name(param: click.Parameter) -> str:
    """The config key of a click parameter: its longest option name, upper case (``--exact-max`` → EXACT_MAX)."""
    opts = [o for o in param.opts if o.startswith("--")] or [param.name or ""]
    return max(opts, key=len).lstrip("-").replace("-", "_").upper()


@dataclass(frozen=True)
class Key:
    """One config key: its section, name and the click parameter that defines its default, type and help."""

    section: str
    name: str
    param: click.Parameter
    command: click.Command | None

    @property
    def full(self) -> str:
        return f"{self.section}.{self.name}"

    def default(self) -> Any:
        """The key's default: the command's own default (its command's context resolves click's sentinels)."""
        ctx = click.Context(self.command or click.Command("run"))
        value = self.param.get_default(ctx, call=True)
        if isinstance(self.param, click.Option) and self.param.is_flag and not self.param.secondary_opts \
                and value is None:
            value = False  # a plain flag is off by default; an on/off pair may default to "unset" (None)
        return plain(value)

    def convert(self, value: Any, where: str) -> Any:
        """``value`` validated by the parameter's own type (YAML-plain: paths as strings, tuples as lists)."""
        p = self.param
        if value is None:
            if self.default() is not None:  # null means "the command's default" only where that is null
                raise LiidError(f"{where}: {self.full} cannot be null (its default is {self.default()!r})")
            return None
        multiple = getattr(p, "multiple", False) or (p.nargs != 1)
        if multiple and not isinstance(value, list | tuple):
            value = [value]
        items = list(value) if multiple else [value]
        out = []
        for v in items:
            if isinstance(v, dict | list | tuple):
                raise LiidError(f"{where}: {self.full} takes a {'list of ' if multiple else ''}"
                                f"{p.type.name} value, not {type(v).__name__}")
            if isinstance(v, str) and any(h in v for h in PLACEHOLDERS):
                out.append(v)  # resolved at run time (the output folder may still be overridden)
                continue
            if isinstance(p, click.Option) and p.is_flag and not isinstance(v, bool):
                raise LiidError(f"{where}: {self.full} is true or false, not {v!r}")
            try:
                out.append(p.type.convert(v, p, None))
            except click.BadParameter as e:
                raise LiidError(f"{where}: {self.full}: {e.message}") from None
        return plain(out if multiple else out[0])

    def help(self) -> str:
        return " ".join((getattr(self.param, "help", None) or "").split())


def plain(value: Any) -> Any:
    """A YAML-plain copy: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


class Schema:
    """Every key of every section, read from the commands of a click group (``liid.cli.main``)."""

    def __init__(self, group: click.Group, sections: Iterable[SectionSpec] = SECTIONS):
        self.sections = {s.name: s for s in sections}
        self.keys: dict[str, dict[str, Key]] = {}
        self.commands: dict[str, click.Command] = {}
        for s in self.sections.values():
            keys: dict[str, Key] = {}
            command = None
            if s.command is not None:
                command = group.commands.get(s.command)
                if command is None:
                    raise LiidError(f"config section {s.name}: no command `liid {s.command}`")
                self.commands[s.name] = command
                for p in command.get_params(click.Context(command)):  # a command may add options at call time
                    if isinstance(p, click.Option) and p.name not in s.wired and p.expose_value:  # not --help
                        keys[key_name(p)] = Key(s.name, key_name(p), p, command)
            for p in s.own:
                keys[key_name(p)] = Key(s.name, key_name(p), p, None)
            self.keys[s.name] = keys

    def key(self, full: str, where: str) -> Key:
        """The key ``SECTION.NAME``; an unknown one is a one-line error naming the closest valid key."""
        section, _, name = full.partition(".")
        if section in self.keys and name in self.keys[section]:
            return self.keys[section][name]
        every = [f"{s}.{k}" for s, ks in self.keys.items() for k in ks]
        close = difflib.get_close_matches(full.upper(), every, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        if not name:
            return self._fail(f"{where}: {full!r} is not a config key (SECTION.KEY, e.g. GRAPH.DELTA){hint}")
        return self._fail(f"{where}: unknown config key {full}{hint}")

    @staticmethod
    def _fail(message: str) -> Key:
        raise LiidError(message)

    def defaults(self) -> dict[str, dict[str, Any]]:
        return {s: {k: key.default() for k, key in keys.items()} for s, keys in self.keys.items()}

    def merge(self, cfg: dict, data: Any, where: str) -> dict:
        """``cfg`` updated by the mapping ``data`` (a config file's content), every key validated."""
        if data is None:
            return cfg
        if not isinstance(data, Mapping):
            raise LiidError(f"{where}: a config is a mapping of sections (RUN, GRAPH, ...), not "
                            f"{type(data).__name__}")
        for section, values in data.items():
            if section == BASE_KEY:
                continue
            if section not in self.keys:
                close = difflib.get_close_matches(str(section).upper(), list(self.keys), n=1, cutoff=0.5)
                raise LiidError(f"{where}: unknown config section {section}"
                                + (f" (did you mean {close[0]}?)" if close else ""))
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise LiidError(f"{where}: section {section} is a mapping of keys, not {type(values).__name__}")
            for name, value in values.items():
                key = self.key(f"{section}.{name}", where)
                cfg[section][key.name] = key.convert(value, where)
        return cfg

    def override(self, cfg: dict, pairs: list[str]) -> dict:
        """``cfg`` with ``KEY VALUE`` pairs of the command line applied (values parsed as YAML scalars)."""
        if len(pairs) % 2:
            raise LiidError(f"overrides come in KEY VALUE pairs; {pairs[-1]!r} has no value")
        for full, text in zip(pairs[::2], pairs[1::2], strict=True):
            key = self.key(full, "command line")
            try:
                value = yaml.safe_load(text) if text != "" else ""
            except yaml.YAMLError:
                value = text
            if isinstance(value, str | int | float | bool) or value is None or isinstance(value, list):
                pass
            else:
                value = text  # a date or a mapping by accident of YAML: keep the text
            cfg[key.section][key.name] = key.convert(value, "command line")
        return cfg

    def args(self, section: str, values: Mapping[str, Any], out: Path, only: Iterable[str] | None = None) -> list[str]:
        """Command-line options of the section's command for the values that differ from its defaults
        (``only``: the parameter names to consider), ``{OUT}`` resolved."""
        keep = None if only is None else set(only)
        args: list[str] = []
        for name, key in self.keys[section].items():
            p = key.param
            if key.command is None or (keep is not None and p.name not in keep):
                continue
            value = resolve_out(values.get(name), out)
            if value == key.default():
                continue
            args += option_args(p, value)
        return args


def option_args(p: click.Parameter, value: Any) -> list[str]:
    """The command-line form of one option's value."""
    assert isinstance(p, click.Option)
    long = max(p.opts, key=len)
    if p.is_flag:
        if p.secondary_opts:
            return [long] if value else [max(p.secondary_opts, key=len)]
        return [long] if value else []
    if value is None:
        return []
    if p.multiple:
        return [a for v in value for a in (long, str(v))]
    if p.nargs != 1:
        return [long, *map(str, value)]
    return [long, str(value)]


def resolve_out(value: Any, out: Path) -> Any:
    """``{OUT}`` in a string value (or in the items of a list) replaced by the run's output folder."""
    if isinstance(value, str):
        return value.replace(OUT_PLACEHOLDER, str(out))
    if isinstance(value, list):
        return [resolve_out(v, out) for v in value]
    return value


def config_file(name: str | Path) -> Path:
    """A config file: the path as given, else a shipped config by its name (``configs/voc_liid.yaml``,
    ``voc_liid.yaml`` or ``voc_liid``: ``liid/configs/voc_liid.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name if path.suffix in (".yaml", ".yml") else path.name + ".yaml"
    shipped = CONFIG_DIR / stem
    if (path.parent == Path(".") or path.parent.name == "configs") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(f"configs/{p.name}" for p in CONFIG_DIR.glob("*.yaml")))
    raise LiidError(f"{name}: config file not found (shipped configs: {names})")


def read_yaml(file: Path) -> Any:
    """A YAML file's content; unreadable or invalid YAML is a one-line error naming the file."""
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise LiidError(f"{file}: not valid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise LiidError(f"{file}: not a text file") from None


def load_config(schema: Schema, name: str | Path, overrides: list[str] = (), _seen: tuple = ()) -> dict:
    """The resolved config: the defaults, then ``_BASE_`` files, then the file, then the overrides."""
    file = config_file(name).resolve()
    if file in _seen:
        raise LiidError(f"{file}: _BASE_ chain loops back to itself")
    data = read_yaml(file)
    if isinstance(data, Mapping) and data.get(BASE_KEY):
        base = Path(str(data[BASE_KEY]))
        base = base if base.is_absolute() else file.parent / base
        cfg = load_config(schema, base, (), (*_seen, file))
    else:
        cfg = schema.defaults()
    schema.merge(cfg, data, str(file))
    return schema.override(cfg, list(overrides))


def dump_config(cfg: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """The config as YAML (sections in schema order), with an optional comment header."""
    text = yaml.safe_dump(copy.deepcopy(dict(cfg)), sort_keys=False, default_flow_style=False, width=120)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join(lines) + ("\n" if lines else "") + text


def describe_keys(schema: Schema) -> str:
    """Every key with its default and help, grouped by section (``liid run --list-keys``)."""
    out = []
    for name, spec in schema.sections.items():
        out.append(f"{name}: {spec.help}")
        for key in schema.keys[name].values():
            default = yaml.safe_dump(key.default(), default_flow_style=True).strip().removesuffix("...").strip()
            out.append(f"  {key.name} = {default}" + (f"   {key.help()}" if key.help() else ""))
    return "\n".join(out)


def plugins_of(name: str | Path, overrides: list[str] = ()) -> list[str]:
    """RUN.PLUGINS of a config (its ``_BASE_`` chain, then the overrides), read before the schema is: a plugin
    may add the very options that make some of the config's keys valid."""
    file = config_file(name).resolve()
    plugins: list[str] = []
    seen: set[Path] = set()
    chain = []
    while file not in seen:
        seen.add(file)
        data = read_yaml(file)
        chain.append(data)
        base = data.get(BASE_KEY) if isinstance(data, Mapping) else None
        if not base:
            break
        base = Path(str(base))
        file = (base if base.is_absolute() else file.parent / base).resolve()
    for data in reversed(chain):  # the base first, the file over it
        run = data.get("RUN") if isinstance(data, Mapping) else None
        if isinstance(run, Mapping) and run.get("PLUGINS") is not None:
            value = run["PLUGINS"]
            plugins = [str(v) for v in (value if isinstance(value, list) else [value])]
    pairs = list(overrides)
    for key, text in zip(pairs[::2], pairs[1::2], strict=False):
        if key.upper() == "RUN.PLUGINS":
            value = yaml.safe_load(text)
            plugins = [str(v) for v in (value if isinstance(value, list) else [value])] if value else []
    return plugins


PATH_KEYS = ("RUN.OUTPUT_DIR", "DATASET.TRAIN", "DATASET.TRAIN_IMAGES", "DATASET.TEST", "DATASET.TEST_IMAGES",
             "PROPOSALS.FROM", "CLS.WEIGHTS", "CLS.OAA_TARGETS", "MIL.WEIGHTS", "MASKRCNN.WEIGHTS", "DEEPLAB.WEIGHTS",
             "LABELER.CAMS", "LABELER.MODEL", "LABELER.SALIENCY")


def absolute_paths(cfg: dict) -> dict:
    """``cfg`` with the output folder and every existing input path made absolute, so that OUT/config.yaml
    reproduces the run from any working folder (a registered dataset name or ``opencv`` stays as it is)."""
    for full in PATH_KEYS:
        section, _, name = full.partition(".")
        value = cfg.get(section, {}).get(name)
        if not isinstance(value, str) or not value or any(h in value for h in PLACEHOLDERS):
            continue
        if full == "RUN.OUTPUT_DIR" or Path(value).exists():
            cfg[section][name] = os.path.abspath(value)
    return cfg
