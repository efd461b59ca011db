"""The guarded fuzzing harness (``tests/fuzzing/``) in the default tier: each outcome is classified as it must
be, and every generator makes and runs a few cases; the generators in ``ASSERTED`` (all of them with
``SEGFORMER_FUZZ_ASSERT_ALL=1``) must find nothing bad: no raw error, silently wrong answer, hang, memory blow-up
or crash. The long run is ``python tests/fuzzing/run.py --examples 1000 --out DIR`` (README, Testing).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from fuzzing.generators import GENERATORS
from fuzzing.runner import BAD, markdown, run_generators

# Generators whose short run must find nothing bad: all of them (each joined once the fixes for what it found were in).
ASSERTED: tuple[str, ...] = tuple(sorted(GENERATORS))
EXAMPLES = 2
HEAVY = ("writer_faults_tf",)  # imports TensorFlow: slow tier
LIGHT = sorted(set(GENERATORS) - set(HEAVY))


def test_harness_classifies_each_outcome():
    report = run_generators(["selftest"], examples=9, timeout=10.0)
    kinds = {record["description"]["kind"]: outcome for outcome, records in report["examples"]["selftest"].items()
             for record in records}
    assert report["counts"]["selftest"] == {"ok": 1, "clear-error": 1, "raw-error": 2, "silently-wrong": 2, "hang": 1,
                                            "memory": 1, "crash": 1}
    assert kinds["raw-error"] == "raw-error" and kinds["unnamed-error"] == "raw-error"
    assert kinds["accepted-invalid"] == "silently-wrong" and kinds["silently-wrong"] == "silently-wrong"
    assert kinds["hang"] == "hang" and kinds["memory"] == "memory" and kinds["crash"] == "crash"
    assert "| selftest | 1 | 1 | 2 | 2 | 1 | 1 | 1 | 0 |" in markdown(report)
    json.dumps(report)  # the JSON report is plain data


@pytest.fixture(scope="module")
def short_run():
    report = run_generators(LIGHT, examples=EXAMPLES, timeout=60.0)
    print("\n" + markdown(report), file=sys.stderr)
    return report


@pytest.mark.parametrize("name", LIGHT)
def test_generator_short_run(short_run, name):
    _check(short_run, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
def test_heavy_generator_short_run(name):
    _check(run_generators([name], examples=EXAMPLES, timeout=60.0), name)


def _check(report, name):
    short_run = report
    counts = short_run["counts"][name]
    assert sum(counts.values()) == EXAMPLES
    assert not counts.get("harness-error"), short_run["examples"][name]["harness-error"]
    if name in ASSERTED or os.environ.get("SEGFORMER_FUZZ_ASSERT_ALL") == "1":
        found = {outcome: records for outcome, records in short_run["examples"][name].items() if outcome in BAD}
        assert not found, json.dumps(found, indent=1, default=str)
