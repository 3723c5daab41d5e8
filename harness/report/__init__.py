"""The HTML report a researcher decides from, and the regression gate CI relies on.

    render_report(results_dir, out_path, matrix_text=..., command=..., gate=...)  -> one self-contained HTML file
    write_baseline(results_dir, path)                                             -> a small baseline JSON
    check_baseline(results_dir, baseline_path, thresholds)                        -> GateResult

Modules: `loader` (results folder -> pandas DataFrame), `pareto` (pure Pareto front), `figures` (seaborn PNGs
as data URIs), `gate` (baseline and check), `render` (context + Jinja2 template `templates/report.html.j2`).
Heavy imports (pandas, matplotlib, seaborn, jinja2) happen inside functions.
"""

from harness.report.gate import GateResult, GateRow, check_baseline, write_baseline
from harness.report.pareto import pareto_front
from harness.report.render import render_report

__all__ = ["GateResult", "GateRow", "check_baseline", "pareto_front", "render_report", "write_baseline"]
