"""The pipeline config (liid/config.py): the schema is the commands' own options, every shipped config loads and
validates, overrides are checked like the file, the resolved config round-trips, and every planned stage's
arguments are accepted by its command."""

from __future__ import annotations

import click
import pytest
import yaml
from click.testing import CliRunner

from liid.cli import main as cli
from liid.config import CONFIG_DIR, Schema, config_file, dump_config, key_name, load_config
from liid.errors import LiidError
from liid.pipeline.runner import plan

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema(cli)


def test_the_shipped_configs_exist():
    assert {p.name for p in SHIPPED} >= {"synthetic_demo.yaml", "voc_liid.yaml", "coco_liid.yaml"}


@pytest.mark.parametrize("file", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads_validates_and_plans(schema, file, tmp_path):
    """Each shipped config resolves (every key known and valid), and each of its stages' arguments parse with
    the stage's command (a renamed or removed option fails here)."""
    raw = yaml.safe_load(file.read_text())
    for section, values in raw.items():
        for name in values or {}:
            assert name in schema.keys[section], f"{file.name}: {section}.{name}"
    needs = [] if raw.get("DATASET", {}).get("SYNTHETIC") else ["DATASET.TRAIN", str(tmp_path / "data.json")]
    if raw.get("PROPOSALS", {}).get("METHOD", "selective-search") != "selective-search":
        needs += ["PROPOSALS.FROM", str(tmp_path / "mcg")]
    given = {k for k in needs[::2]} | {"RUN.OUTPUT_DIR"}
    cfg = load_config(schema, file, [*needs, "RUN.OUTPUT_DIR", str(tmp_path / "run")])
    for section, values in raw.items():  # what the file says is what the config holds
        for name, value in (values or {}).items():
            if f"{section}.{name}" in given:
                continue
            assert cfg[section][name] == (value if not isinstance(value, tuple) else list(value)), (section, name)
    stages = plan(cfg, schema)
    assert [s.stage for s in stages][:2] in (["dataset", "proposals"], ["proposals", "filter"])
    for st in stages:
        cmd = cli.commands[st.command]
        ctx = cmd.make_context(st.command, list(st.args))  # raises click.UsageError on a bad option
        if st.command.startswith("train-"):
            assert ctx.params["resume"], st.title  # an interrupted run continues


def test_the_schema_is_the_commands_options(schema):
    """A key's default, validation and help are its command option's: nothing is declared twice."""
    build = cli.commands["build-graph"]
    delta = next(p for p in build.params if p.name == "delta")
    key = schema.keys["GRAPH"]["DELTA"]
    assert key.param is delta and key.default() == 0.5 and key.help() == " ".join(delta.help.split())
    assert schema.keys["GRAPH"]["KNN"].param.name == "method"  # the key is the option's name (--knn)
    assert schema.keys["MIL"]["NO_FLIP"].default() is False
    assert schema.keys["GRAPH"]["CENTRE"].default() is True
    # every option of every sectioned command is a key, except the ones the runner wires
    for name, spec in schema.sections.items():
        if spec.command is None:
            continue
        cmd = cli.commands[spec.command]
        options = {key_name(p) for p in cmd.params if isinstance(p, click.Option) and p.name not in spec.wired}
        assert options <= set(schema.keys[name]), name
        assert not {"OUT", "OVERWRITE", "RESUME"} & set(schema.keys[name]), name


def test_a_new_command_option_is_a_new_key(schema):
    """Adding an option to a command adds its config key, with its default (read from the command)."""
    cmd = cli.commands["export"]
    extra = click.Option(["--test-only-knob"], default=7, type=click.IntRange(0), help="a test option")
    cmd.params.append(extra)
    try:
        s = Schema(cli)
        assert s.keys["EXPORT"]["TEST_ONLY_KNOB"].default() == 7
        with pytest.raises(LiidError, match=r"EXPORT.TEST_ONLY_KNOB: -1 is not in the range x>=0"):
            s.override(s.defaults(), ["EXPORT.TEST_ONLY_KNOB", "-1"])
    finally:
        cmd.params.remove(extra)


@pytest.mark.parametrize(("pair", "message"), [
    (["GRAPH.DELTAA", "5"], r"unknown config key GRAPH.DELTAA \(did you mean GRAPH.DELTA\?\)"),
    (["MIL.EPOCH", "3"], r"unknown config key MIL.EPOCH \(did you mean MIL.EPOCHS\?\)"),
    (["GRPAH.DELTA", "5"], r"unknown config key GRPAH.DELTA \(did you mean GRAPH.DELTA\?\)"),
    (["DELTA", "5"], r"'DELTA' is not a config key \(SECTION.KEY"),
    (["GRAPH.DELTA", "-1"], r"GRAPH.DELTA: -1.0 is not in the range x>0"),
    (["GRAPH.DELTA", "nan"], r"GRAPH.DELTA: nan is not a finite number"),
    (["MIL.ATT_POOLING", "bogus"], r"MIL.ATT_POOLING: 'bogus' is not one of 'box', 'mask', 'soft-iou'"),
    (["GRAPH.CENTRE", "maybe"], r"GRAPH.CENTRE is true or false, not 'maybe'"),
    (["GRAPH.DELTA", "null"], r"GRAPH.DELTA cannot be null \(its default is 0.5\)"),
    (["GRAPH.DELTA"], r"KEY VALUE pairs; 'GRAPH.DELTA' has no value"),
])
def test_a_bad_override_is_one_line_naming_the_key(pair, message, tmp_path):
    """On the command line: exit 2, one line, naming the key and (for a typo) the closest valid one."""
    r = CliRunner().invoke(cli, ["run", "--config-file", "configs/synthetic_demo.yaml", "--out",
                                 str(tmp_path / "o"), *pair, "--dry-run"])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()  # nothing written


def test_overrides_are_typed_like_the_file(schema):
    cfg = load_config(schema, "configs/synthetic_demo.yaml", ["MIL.EPOCHS", "3", "GRAPH.DELTA", "5",
                                                             "GRAPH.CENTRE", "false", "LABELER.BASELINES", "[]",
                                                             "CLS.WEIGHTS", "null"])
    assert cfg["MIL"]["EPOCHS"] == 3 and cfg["GRAPH"]["DELTA"] == 5.0 and isinstance(cfg["GRAPH"]["DELTA"], float)
    assert cfg["GRAPH"]["CENTRE"] is False and cfg["LABELER"]["BASELINES"] == [] and cfg["CLS"]["WEIGHTS"] is None


def test_the_resolved_config_round_trips(schema, tmp_path):
    """dump → load gives the same config; the dump holds every key of every section."""
    cfg = load_config(schema, "configs/synthetic_demo.yaml", ["GRAPH.DELTA", "2.5", "MIL.EPOCHS", "2"])
    file = tmp_path / "resolved.yaml"
    file.write_text(dump_config(cfg, header="a header\nof two lines"))
    assert file.read_text().startswith("# a header\n# of two lines\n")
    again = load_config(schema, file)
    assert again == cfg
    assert set(yaml.safe_load(file.read_text())) == set(schema.keys)
    assert all(set(v) == set(schema.keys[k]) for k, v in yaml.safe_load(file.read_text()).items())


def test_base_configs_merge_and_loops_are_refused(schema, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("GRAPH:\n  DELTA: 2.0\n  K: 5\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nGRAPH:\n  K: 7\n")
    cfg = load_config(schema, child)
    assert cfg["GRAPH"]["DELTA"] == 2.0 and cfg["GRAPH"]["K"] == 7
    base.write_text("_BASE_: child.yaml\n")
    with pytest.raises(LiidError, match="loops back"):
        load_config(schema, child)


@pytest.mark.parametrize(("text", "message"), [
    ("GRAPH:\n  DELTA: [1\n", r"bad.yaml: not valid YAML \(line \d+\)"),
    ("- 1\n- 2\n", r"bad.yaml: a config is a mapping of sections"),
    ("GRAF:\n  DELTA: 1\n", r"bad.yaml: unknown config section GRAF \(did you mean GRAPH\?\)"),
    ("GRAPH: 5\n", r"bad.yaml: section GRAPH is a mapping of keys"),
    ("GRAPH:\n  NEIGHBORS: all\n", r"bad.yaml: unknown config key GRAPH.NEIGHBORS \(did you mean GRAPH.NEIGHBOURS\?\)"),
    ("GRAPH:\n  K: 0\n", r"bad.yaml: GRAPH.K: 0 is not in the range 1<=x<=64"),
    ("GRAPH:\n  K: {a: 1}\n", r"bad.yaml: GRAPH.K takes a integer range value, not dict"),
])
def test_a_bad_file_names_the_file_and_the_key(schema, tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(LiidError, match=message) as e:
        load_config(schema, bad)
    assert "\n" not in str(e.value)


def test_config_file_finds_shipped_configs_by_name(tmp_path):
    for name in ("configs/voc_liid.yaml", "voc_liid.yaml", "voc_liid"):
        assert config_file(name) == CONFIG_DIR / "voc_liid.yaml"
    with pytest.raises(LiidError, match=r"nope.yaml: config file not found \(shipped configs: .*voc_liid.yaml"):
        config_file("configs/nope.yaml")


def test_list_keys_and_print_config(tmp_path):
    r = CliRunner().invoke(cli, ["run", "--list-keys"])
    assert r.exit_code == 0
    assert "GRAPH: `liid build-graph`" in r.output and "  DELTA = 0.5   Eq. (10) balance factor" in r.output
    r = CliRunner().invoke(cli, ["run", "--config-file", "configs/coco_liid.yaml", "--print-config",
                                 "DATASET.TRAIN", "x.json"])
    assert r.exit_code == 0
    printed = yaml.safe_load(r.output)
    assert printed["FILTER"]["TOP"] == 40 and printed["DATASET"]["TRAIN"] == "x.json"


def test_the_paper_settings_of_the_voc_config(schema, tmp_path):
    """configs/voc_liid.yaml is the paper's recipe (DESIGN: ResNet50, 448 px, top 20, delta 5, k 3, lr 5e-4 for
    10 epochs, eq. 3 over boxes, neighbours of any image, raw cosine)."""
    cfg = load_config(schema, "configs/voc_liid.yaml", ["DATASET.TRAIN", str(tmp_path)])
    assert cfg["FILTER"]["TOP"] == 20 and cfg["GRAPH"]["DELTA"] == 5.0 and cfg["GRAPH"]["K"] == 3
    assert cfg["MIL"]["BACKBONE"] == "resnet50" and cfg["MIL"]["SIZE"] == 448 and cfg["MIL"]["EPOCHS"] == 10
    assert cfg["MIL"]["LR"] == 0.0005 and cfg["MIL"]["ATT_POOLING"] == "box"
    assert cfg["GRAPH"]["NEIGHBOURS"] == "all" and cfg["GRAPH"]["CENTRE"] is False
    stages = {s.stage: s for s in plan(cfg, schema)}
    seg = stages["segmenter"].args
    assert seg[seg.index("--eval-dataset") + 1] == str(tmp_path) and seg[seg.index("--eval-split") + 1] == "val"
