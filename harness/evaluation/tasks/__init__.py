"""Built-in evaluation tasks: one folder each (`<name>/task.py` + the lm-eval YAML + `utils.py`), found by
`harness.evaluation.registry`."""
