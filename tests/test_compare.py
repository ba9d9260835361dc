"""The labeler comparison (tools/bench_labelers.py): every method's stages exist and run in dependency order, each
stage writes where its method's evaluation reads, and the table shows a dash where a method has no instances."""

from __future__ import annotations

from liid.pipeline.compare import METHODS, CompareConfig, markdown_table, stages


def test_every_method_has_its_stages_in_order(tmp_path):
    todo = stages(CompareConfig(), tmp_path)
    names = [s.name for s in todo]
    assert len(names) == len(set(names))
    for method, (label_stage, needs) in METHODS.items():
        assert label_stage in names, method
        for need in needs:
            assert names.index(need) < names.index(label_stage), (method, need)
        ev = todo[names.index(f"evaluate {method}")]
        assert ev.args[-3] == str(todo[names.index(label_stage)].output), method  # evaluates its own labels
    assert names[0] == "make-synthetic"
    coco = stages(CompareConfig(dataset="x.json"), tmp_path)
    assert coco[0].name == "proposals" and coco[0].args[1] == "x.json"


def test_markdown_table_dashes_missing_instances():
    r = {"methods": {"cam rect": {"miou": 0.5, "ap50": 0.25, "ap75": 0.125, "seconds_per_image": 1.0,
                                  "label_seconds_per_image": 0.01},
                     "dsrg": {"miou": 0.4, "ap50": None, "ap75": None, "seconds_per_image": 2.0,
                              "label_seconds_per_image": 0.02}}}
    lines = markdown_table(r).splitlines()
    assert lines[2] == "| cam rect | 0.500 | 0.250 | 0.125 | 1.00 | 0.010 |"
    assert lines[3] == "| dsrg | 0.400 | – | – | 2.00 | 0.020 |"
