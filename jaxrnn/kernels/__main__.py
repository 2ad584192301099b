"""``python -m jaxrnn.kernels``: build the CPU kernels now (normally done on first use) and print
where they are, or why they cannot be used here.

``python -m jaxrnn.kernels plans``: the plan each shape class runs with on this machine (from
the cache file the kernels keep beside the library), and why; ``--reset`` deletes that file so
that the next calls tune again."""

import argparse
import sys

from jaxrnn import kernels
from jaxrnn.kernels import tune


def build() -> int:
    try:
        path = kernels.build(verbose=True)
    except Exception as err:  # no compiler, headers missing, compile error: say so, exit non-zero
        print(f"jaxrnn kernels: cannot build: {err}", file=sys.stderr)
        return 1
    print(path)
    print(f"jaxrnn kernels: {kernels.status()}")
    if kernels.available():
        info = kernels.build_info()
        print(f"jaxrnn kernels: -march={kernels.march()}, {info['lanes']} floats per vector, "
              f"register tile of {info['tile_rows']} rows")
    return 0


def plans(reset: bool) -> int:
    try:
        library = kernels.build()
    except Exception as err:
        print(f"jaxrnn kernels: cannot build: {err}", file=sys.stderr)
        return 1
    path = tune.cache_path(library)
    if reset:
        path.unlink(missing_ok=True)
        print(f"jaxrnn kernels: removed {path}; the next calls of each shape class tune again")
        return 0
    cached = tune.read_cache(path)
    print(f"jaxrnn kernels: plans for this CPU in {path}"
          + ("" if tune.enabled() else " (not used: JAXRNN_KERNEL_TUNE=0)"))
    if not cached:
        print("  none yet: a shape class is tuned on its first calls (run a program, or "
              "`python -m benchmarks --quick`), and its plan is kept here")
    for entry in cached:
        print("  " + tune.describe(entry))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxrnn.kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build", help="build the kernels now and say where they are (the default)")
    p = sub.add_parser("plans", help="the plan each shape class runs with here, and why")
    p.add_argument("--reset", action="store_true", help="delete the cached plans")
    args = parser.parse_args(argv)
    if args.command == "plans":
        return plans(args.reset)
    return build()


if __name__ == "__main__":
    sys.exit(main())
