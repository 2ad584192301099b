"""The ``jaxrnn`` command line: ``train``, ``evaluate``, ``generate`` for each task, ``demo``."""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxrnn.tasks import DEMOS, TASKS


def _load(path: str):
    return importlib.import_module(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxrnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a demonstration")
    demo_sub = demo.add_subparsers(dest="name", required=True)
    for name, path in DEMOS.items():
        mod = _load(path)
        p = demo_sub.add_parser(name, help=getattr(mod, "DESCRIPTION", ""))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args._run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
