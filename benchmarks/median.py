"""The issue's targets judged by the median of several runs (machines here are noisy).

``python -m benchmarks.median RUN.json RUN.json RUN.json`` prints a Markdown table: for every
ratio target of :func:`benchmarks.report.targets` (quiet and, where the runs timed it,
contended), the value in each run, the median and whether the median meets the target. Full and
quick runs alike; ``--markdown BENCHMARKS.md`` also writes the table into the block
``median <mode>`` of the runs' CPU model's section (all runs must come from one CPU model).
"""

from __future__ import annotations

import argparse
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


def median_values(runs: list[dict]) -> dict[str, tuple[str, list[float | None]]]:
    """``{target: (unit, [value in each run or None])}`` for the targets with a threshold."""
    values: dict[str, tuple[str, list[float | None]]] = {}
    for i, run in enumerate(runs):
        for target, measured, _ in targets(run):
            m = _NUMBER.match(measured)
            if m is None or threshold(target) is None:
                continue
            unit, vals = values.setdefault(target, (m.group(2), [None] * len(runs)))
            vals[i] = float(m.group(1))
    return values


def median_table(runs: list[dict]) -> str:
    lines = ["| target | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
             + " | median | met |", "|---|" + "---|" * (len(runs) + 2)]
    for target, (unit, vals) in median_values(runs).items():
        med = statistics.median([v for v in vals if v is not None])
        if unit == "%":
            fmt = lambda v: "-" if v is None else f"{v:.0f}%"  # noqa: E731
        else:
            fmt = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        lines.append(f"| {target} | " + " | ".join(fmt(v) for v in vals)
                     + f" | {fmt(med)} | {'yes' if med >= threshold(target) else 'no'} |")
    return "\n".join(lines)


def write_markdown(runs: list[dict], paths: list[Path], md: Path) -> str:
    """Write the median table into ``md``'s section for the runs' CPU model; returns the
    block's key."""
    from benchmarks import mdblocks, report

    models = {r["machine"].get("cpu") for r in runs}
    if len(models) != 1:
        raise ValueError(f"runs: expected one CPU model, got {sorted(map(str, models))}")
    modes = sorted({r["mode"] for r in runs})
    text = md.read_text() if md.exists() else "# Benchmarks\n\n" + report.BENCHMARKS_INTRO + "\n"
    text = report.ensure_cpu_section(text, runs[0])
    parent = report.cpu_key(runs[0])
    key = f"{parent} / median {'+'.join(modes)}"
    rel = []
    for p in paths:
        try:
            rel.append(str(p.resolve().relative_to(md.parent.resolve())))
        except ValueError:
            rel.append(str(p))
    body = [f"### Median of {len(runs)} {'/'.join(modes)} runs", "",
            f"`python -m benchmarks.median {' '.join(rel)}`; runs started "
            + ", ".join(r["started_utc"] for r in runs) + ".", "",
            f"Machine (first run): {report.machine_line(runs[0])}.", "", median_table(runs)]
    md.write_text(mdblocks.merge(text, key, "\n".join(body), parent=parent))
    return key


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.median", description=__doc__)
    ap.add_argument("runs", nargs="*", type=Path, help="run records (benchmarks/results/*.json)")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="also write the table into this file's section for the CPU model")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.runs:
        print("usage: python -m benchmarks.median RUN.json [RUN.json ...]", file=sys.stderr)
        return 2
    runs = [json.loads(p.read_text()) for p in args.runs]
    print(median_table(runs))
    if args.markdown is not None:
        key = write_markdown(runs, args.runs, args.markdown)
        print(f"updated {args.markdown} (block {key!r})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
