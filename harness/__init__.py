"""medbench: a benchmark harness for fine-tuning strategies on small medical LLMs."""

__version__ = "0.1.0"
