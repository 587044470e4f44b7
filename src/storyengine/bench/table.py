"""What every bench reports: the machine, the exact command, and each measure's runs -> median, min, max.

A `Report` prints as a rich table or as one JSON object (`as_dict`). Bench-specific headline
numbers go in `summary` (top-level keys of the JSON object); every timed quantity is a
`Measure` with all of its runs, so nothing is reported without the spread behind it.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and the load average now (the machine may be shared)."""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(terse=True),
        "load_average": load_average(),
    }


@dataclass
class Measure:
    """One measured quantity over several runs."""

    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    digits: int = 3

    def add(self, value: float) -> None:
        self.runs.append(value)

    @property
    def median(self) -> float | None:
        return round(statistics.median(self.runs), self.digits) if self.runs else None

    @property
    def min(self) -> float | None:
        return round(min(self.runs), self.digits) if self.runs else None

    @property
    def max(self) -> float | None:
        return round(max(self.runs), self.digits) if self.runs else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "runs": [round(r, self.digits) for r in self.runs],
            "median": self.median,
            "min": self.min,
            "max": self.max,
        }


@dataclass
class Report:
    """A finished bench: what ran where, its measures, its headline numbers and notes."""

    bench: str
    command: str
    machine: dict[str, Any]
    measures: list[Measure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    """Extra tables for the terminal (title, columns, rows); their data is also in `summary`."""

    def measure(self, name: str, unit: str, digits: int = 3) -> Measure:
        found = Measure(name, unit, digits=digits)
        self.measures.append(found)
        return found

    def finish(self) -> Report:
        """Record the load average at the end too (a shared machine changes during a bench)."""
        self.machine["load_average_end"] = load_average()
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "command": self.command,
            "machine": self.machine,
            **self.summary,
            "measures": [m.as_dict() for m in self.measures],
            "notes": self.notes,
        }

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        header = Table.grid(padding=(0, 2))
        header.add_column(style="bold")
        header.add_column()
        m = self.machine
        header.add_row("bench", self.bench)
        header.add_row("command", self.command)
        header.add_row("machine", f"{m['cores']} cores · {m['cpu']} · Python {m['python']}")
        header.add_row("load average", f"{_load(m.get('load_average'))} → {_load(m.get('load_average_end'))}")
        console.print(header)
        table = Table(show_header=True, header_style="bold")
        for column in ("measure", "unit", "runs", "median", "min", "max"):
            table.add_column(column, justify="left" if column in ("measure", "unit") else "right")
        for measure in self.measures:
            table.add_row(
                measure.name,
                measure.unit,
                str(len(measure.runs)),
                _number(measure.median),
                _number(measure.min),
                _number(measure.max),
            )
        console.print(table)
        for title, columns, rows in self.tables:
            extra = Table(title=title, show_header=True, header_style="bold", title_justify="left")
            for column in columns:
                extra.add_column(column)
            for row in rows:
                extra.add_row(*(_value(cell) for cell in row))
            console.print(extra)
        if self.summary:
            summary = Table.grid(padding=(0, 2))
            summary.add_column(style="bold")
            summary.add_column()
            for key, value in self.summary.items():
                if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                    continue  # nested results are shown in `tables`
                summary.add_row(key, _value(value))
            console.print(summary)
        for note in self.notes:
            console.print(f"note: {note}", highlight=False)


def _load(values: list[float] | None) -> str:
    return "n/a" if not values else " ".join(f"{v:.2f}" for v in values)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return str(value)
