"""The one table (Markdown, so it pastes into the README as is), and the result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("case", "measure", "session-operator", "floor (same run)", "ratio", "goal", "met")


@dataclass
class Row:
    case: str
    measure: str
    value: str
    floor: str = "–"
    ratio: str = "–"
    goal: str = "–"
    met: bool | None = None

    def cells(self) -> list[str]:
        mark = {True: "yes", False: "**no**", None: "–"}[self.met]
        return [self.case, self.measure, self.value, self.floor, self.ratio, self.goal, mark]


def secs(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.0095 else f"{value * 1000:.1f} ms"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}/s"


def mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.0f} MiB"


def times(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}×"


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def header(server: str, info: dict[str, Any], date: str, args: str) -> str:
    return (f"Server: **{server}**. Machine: {info['cores']} cores ({info['platform']}, Python {info['python']}; "
            f"load average {info['loadavg_at_start'][0]:.2f} at the start). Date: {date}. "
            f"Command: `python -m bench{(' ' + args) if args else ''}`.")


def write(out_dir: Path, report: dict[str, Any], rows: list[Row], notes: list[str]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = dict(report, rows=[asdict(r) for r in rows], notes=notes)
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = ["# session-operator benchmark", "", header(report["server"], report["machine"], report["date"],
                                                     report["args"]), "", table(rows), ""]
    if notes:
        md += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    md_path = out_dir / "latest.md"
    md_path.write_text("\n".join(md))
    return json_path, md_path
