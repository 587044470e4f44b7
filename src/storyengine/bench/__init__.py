"""Benchmarks behind `storyengine bench NAME`: each returns a `Report` (a table, or one JSON object).

- render: poml.poml() against the memoized renderer
- overhead: the pipeline's own cost per call, and its share of a real story
- concurrency: wall time against the dependency graph's lower bound (local slow server)
- cache: a story twice with one seed, cold and warm provider calls
- validity: structured validity per mode over built-in premises
- peer: storyengine's plot component beside instructor on the same model
- story: one story, cache off, against the decode and prefill bounds of the model's own rates
"""

from .table import Measure, Report, machine

__all__ = ["Measure", "Report", "machine"]
