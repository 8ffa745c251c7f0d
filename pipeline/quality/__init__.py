"""Data-quality metrics, flags and the HTML/JSON report of a build or release (docs/quality.md).

Entry points:

* metrics: ``metric_provider`` (register), ``compute_metrics(arrays, meta)``, ``metrics_row``,
  ``CATALOG``; ``sequence_metrics(processed)`` for a build's per-file task;
* flags: ``Thresholds`` (``default()``, ``load(path)``), ``evaluate_flags(row, thresholds)``,
  ``apply_flags(rows, thresholds) -> (table, exclusions)``, ``excluded_ids``,
  ``write_quality_outputs(out, table, exclusions, staged=...)``, ``read_metrics``;
* report: ``build_report(out, parent=None)``, ``report_json(out, parent=None)``,
  ``exit_code(summary, max_exclusion_rate)``, ``add_report_parser(subparsers)`` + ``run_report(args)``.

Heavy imports (matplotlib, zarr) happen only when the report is built.
"""

from .flags import (
    DEFAULT_RULES,
    EXCLUSIONS_FILE,
    FLAGS_FILE,
    LEVELS,
    METRICS_FILE,
    Flag,
    Rule,
    Thresholds,
    apply_flags,
    evaluate_flags,
    excluded_ids,
    metrics_table,
    read_metrics,
    write_metrics,
    write_quality_outputs,
)
from .integration import build_in_process, finish_quality, sequence_metrics
from .metrics import (
    CATALOG,
    PROVIDERS,
    MetricSpec,
    compute_metrics,
    derived_array,
    inputs_from_payload,
    metric_provider,
    metrics_row,
    sequence_inputs,
)


def build_report(*args, **kwargs):
    """See ``pipeline.quality.report.build_report``."""
    from .report import build_report as _build_report

    return _build_report(*args, **kwargs)


def report_json(*args, **kwargs):
    """See ``pipeline.quality.report.report_json``."""
    from .report import report_json as _report_json

    return _report_json(*args, **kwargs)


def exit_code(summary, max_exclusion_rate):
    """See ``pipeline.quality.report.exit_code``."""
    from .report import exit_code as _exit_code

    return _exit_code(summary, max_exclusion_rate)


def add_report_parser(subparsers):
    """See ``pipeline.quality.report.add_report_parser``."""
    from .report import add_report_parser as _add

    return _add(subparsers)


def run_report(args) -> int:
    """See ``pipeline.quality.report.run_report``."""
    from .report import run_report as _run

    return _run(args)


__all__ = [
    "CATALOG", "DEFAULT_RULES", "EXCLUSIONS_FILE", "FLAGS_FILE", "LEVELS", "METRICS_FILE", "PROVIDERS", "Flag",
    "MetricSpec", "Rule", "Thresholds", "add_report_parser", "apply_flags", "build_in_process", "build_report",
    "compute_metrics", "derived_array", "evaluate_flags", "excluded_ids", "exit_code", "finish_quality",
    "inputs_from_payload", "metric_provider", "metrics_row", "metrics_table", "read_metrics", "report_json",
    "run_report", "sequence_inputs", "sequence_metrics", "write_metrics", "write_quality_outputs",
]
