"""``deploy/prometheus/hydrovisor-rules.yml`` only uses series hydrovisor exports (issue 13: "alert rules in
``deploy/`` whose expressions only use metrics hydrovisor exports").

Every ``hydrovisor_*`` name in an ``expr`` is looked up in a running instance's ``/metrics``: as a sample, or
as a family announced by its ``# TYPE`` line (a labelled series nobody has observed yet prints its HELP and
TYPE lines and no sample), with the suffixes the family's type implies (``_bucket``/``_sum``/``_count`` of a
histogram). Recording-rule names (``hydrovisor:...``, with colons) are not metrics: they must be recorded by
a rule of the file instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import Running, instance, start_app  # noqa: F401 - fixtures
from tests.helpers import http

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "hydrovisor-rules.yml"

# a metric name, not part of a recording-rule name (those contain colons)
_METRIC = re.compile(r"(?<![\w:])hydrovisor_[a-z0-9_]+(?![\w:])")
_RECORDING = re.compile(r"(?<![\w:])hydrovisor:[a-zA-Z0-9_:]+(?![\w:])")
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count", "_created"), "summary": ("", "_sum", "_count", "_created"),
             "gaugehistogram": ("_bucket", "_gsum", "_gcount")}


def rules_of(text: str) -> tuple[list[str], list[str]]:
    """``(the expressions, the recorded names)`` of a rules file: parsed as YAML when PyYAML is there, else
    read line by line (every ``expr:`` / ``record:`` in this file is a one-line scalar)."""
    try:
        import yaml  # noqa: PLC0415 - optional (not a dependency of hydrovisor)
    except ImportError:
        return _rules_by_lines(text)
    document: dict[str, Any] = yaml.safe_load(text)
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    return [str(rule["expr"]) for rule in rules], [rule["record"] for rule in rules if "record" in rule]


def _rules_by_lines(text: str) -> tuple[list[str], list[str]]:
    def values(key: str) -> list[str]:
        found = re.findall(rf"^\s*-?\s*{key}:\s*(.+?)\s*$", text, flags=re.MULTILINE)
        return [value.strip("'\"") for value in found]

    return values("expr"), values("record")


def metric_names(expressions: list[str]) -> set[str]:
    """The ``hydrovisor_*`` metric names the expressions use."""
    return {name for expr in expressions for name in _METRIC.findall(expr)}


def exported_names(metrics_text: str) -> set[str]:
    """Every series name ``/metrics`` serves or announces: sample names, and each ``# TYPE`` family's name
    with the suffixes its type implies (a counter's TYPE line already names ``..._total``)."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        match = _TYPE_LINE.match(line)
        if match:
            family, kind = match.groups()
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def missing_metrics(rules_text: str, metrics_text: str) -> set[str]:
    """The metric names the rules use that ``/metrics`` does not export."""
    expressions, _ = rules_of(rules_text)
    return metric_names(expressions) - exported_names(metrics_text)


# the file itself -------------------------------------------------------------------------------------------


def test_the_rules_use_hydrovisor_metrics() -> None:
    expressions, recorded = rules_of(RULES.read_text(encoding="utf-8"))
    assert len(expressions) >= 5 and recorded
    names = metric_names(expressions)
    assert "hydrovisor_task_dispatch_lag_seconds_bucket" in names
    assert "hydrovisor_scheduler_leader" in names
    assert not any(":" in name for name in names)  # recording rules are not counted as metrics


def test_every_recording_rule_used_is_recorded_in_the_file() -> None:
    expressions, recorded = rules_of(RULES.read_text(encoding="utf-8"))
    used = {name for expr in expressions for name in _RECORDING.findall(expr)}
    assert used, "the alerts use the recorded SLIs"
    assert used <= set(recorded), f"used but never recorded: {sorted(used - set(recorded))}"


def test_reading_by_lines_finds_what_yaml_finds() -> None:
    """The fallback for an environment without PyYAML reads the same expressions from this file."""
    pytest.importorskip("yaml")
    text = RULES.read_text(encoding="utf-8")
    assert _rules_by_lines(text) == rules_of(text)


def test_a_name_hydrovisor_does_not_export_is_reported() -> None:
    metrics = ("# HELP hydrovisor_tasks_terminal_total Tasks.\n# TYPE hydrovisor_tasks_terminal_total counter\n"
               "# HELP hydrovisor_task_dispatch_lag_seconds Lag.\n# TYPE hydrovisor_task_dispatch_lag_seconds "
               "histogram\nhydrovisor_task_dispatch_lag_seconds_count 0.0\n"
               "# HELP hydrovisor_up Up.\n# TYPE hydrovisor_up gauge\nhydrovisor_up 1.0\n")
    rules = ("groups:\n  - name: g\n    rules:\n"
             "      - record: hydrovisor:x:rate5m\n"
             "        expr: sum(rate(hydrovisor_tasks_terminal_total[5m])) + hydrovisor_up\n"
             "      - alert: A\n"
             "        expr: histogram_quantile(0.9, rate(hydrovisor_task_dispatch_lag_seconds_bucket[5m])) > 1 "
             "and hydrovisor:x:rate5m > 0 and rate(hydrovisor_tasks_terminal[5m]) > 0 "
             "and hydrovisor_made_up_total > 0\n")
    # a counter is exported as ..._total only; the recording rule's name is not a metric
    assert missing_metrics(rules, metrics) == {"hydrovisor_tasks_terminal", "hydrovisor_made_up_total"}


# against a running instance ----------------------------------------------------------------------------------


def test_every_metric_of_the_rules_is_exported_by_a_running_instance(instance: Running) -> None:  # noqa: F811
    reply = http("GET", instance.base_url + "/metrics")
    assert reply.status == 200
    text = reply.raw.decode()
    rules_text = RULES.read_text(encoding="utf-8")
    missing = missing_metrics(rules_text, text)
    assert not missing, f"rules name metrics hydrovisor does not export: {sorted(missing)}"
    # the scheduler's labelled series are announced before any task ran (HELP/TYPE, no samples)
    assert "# TYPE hydrovisor_task_command_effects_total counter" in text
