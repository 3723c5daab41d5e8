"""lm-eval task YAML files shipped with the harness, and the functions they reference (`utils.py`)."""
