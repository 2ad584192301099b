"""The issue's targets judged by the median of several full runs (machines here are noisy).

``python -m benchmarks.median RUN.json RUN.json RUN.json`` prints a Markdown table: for every
ratio target of :func:`benchmarks.report.targets`, the value in each run, the median and whether
the median meets the target.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from benchmarks.report import targets

_NUMBER = re.compile(r"^([\d.]+)(x|%)$")


def threshold(target: str) -> float | None:
    """The number a target's measured value must reach, read from its wording."""
    m = re.search(r">= ([\d.]+)(x|%)", target)
    if m:
        return float(m.group(1))
    if re.search(r">= PyTorch", target):
        return 1.0
    return None


def median_table(runs: list[dict]) -> str:
    values: dict[str, list[float | None]] = {}
    for i, run in enumerate(runs):
        for target, measured, _ in targets(run):
            m = _NUMBER.match(measured)
            if m is None or threshold(target) is None:
                continue
            values.setdefault(target, [None] * len(runs))[i] = float(m.group(1))
    lines = ["| target | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
             + " | median | met |", "|---|" + "---|" * (len(runs) + 2)]
    for target, vals in values.items():
        got = [v for v in vals if v is not None]
        med = statistics.median(got)
        unit = "%" if target.rstrip().endswith("ceiling") else "x"
        fmt = (lambda v: "-" if v is None else f"{v:.0f}%") if unit == "%" else \
              (lambda v: "-" if v is None else f"{v:.2f}x")
        lines.append(f"| {target} | " + " | ".join(fmt(v) for v in vals)
                     + f" | {fmt(med)} | {'yes' if med >= threshold(target) else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m benchmarks.median RUN.json [RUN.json ...]", file=sys.stderr)
        return 2
    runs = [json.loads(p.read_text()) for p in paths]
    print(median_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
