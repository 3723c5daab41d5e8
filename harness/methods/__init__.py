"""Fine-tuning methods: one module each, found by `harness.methods.base.methods()`."""

from harness.methods.base import Method, PreparedModel, get_method, methods, presets, register

__all__ = ["Method", "PreparedModel", "get_method", "methods", "presets", "register"]
