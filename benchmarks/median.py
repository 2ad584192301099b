"""One report from several runs: ``python -m benchmarks.median RUN.json RUN.json RUN.json``.

A run made with ``--repeat N`` is already a median of N; this joins separate runs of one CPU
model (each run's repeats become repeats of the joint one) and prints the report of
:mod:`benchmarks.summary`: every row and every target of issue 26 by the median over all of
them. ``--markdown BENCHMARKS.md`` also rewrites that CPU model's section, ``--summaries DIR``
its summary file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import summary


def join(runs: list[dict]) -> dict:
    """The runs as one: config sections renumbered so that each run's repeats follow the
    previous run's, solo checks pooled; the machine and command of the first."""
    models = {summary.cpu_name(r["machine"]) for r in runs}
    if len(models) != 1:
        raise ValueError(f"runs: expected one CPU model, got {sorted(models)}")
    sections, solo, skipped, offset = [], [], [], 0
    for run in runs:
        reps = [s["spec"].get("repeat", 0) for s in run["sections"]
                if s["spec"]["kind"] == "config"]
        for s in run["sections"]:
            if s["spec"]["kind"] != "config":
                continue
            rep = s["spec"].get("repeat", 0) + offset
            sections.append({**s, "spec": {**s["spec"], "repeat": rep},
                             "records": [{**r, "repeat": rep} for r in s["records"]]})
        solo += run.get("solo") or []
        skipped += run.get("skipped") or []
        offset += max(reps, default=-1) + 1
    first = runs[0]
    return {**first, "sections": sections, "solo": solo, "skipped": skipped,
            "wall_s": sum(r["wall_s"] for r in runs),
            "command": " + ".join(dict.fromkeys(r["command"] for r in runs))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.median", description=__doc__)
    ap.add_argument("runs", nargs="*", type=Path, help="run records (bench-results/*.json)")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="also rewrite this file's section for the CPU model")
    ap.add_argument("--summaries", type=Path, default=None,
                    help="also write the CPU model's summary into this folder")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.runs:
        print("usage: python -m benchmarks.median RUN.json [RUN.json ...]", file=sys.stderr)
        return 2
    summ = summary.summarise_run(join([json.loads(p.read_text()) for p in args.runs]))
    print(summary.markdown(summ))
    if args.markdown is not None:
        key = summary.write_benchmarks_md(summ, args.markdown)
        print(f"updated {args.markdown} (block {key!r})", file=sys.stderr)
    if args.summaries is not None:
        print(f"wrote {summary.write_summary(summ, args.summaries)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
