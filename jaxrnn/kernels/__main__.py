"""``python -m jaxrnn.kernels``: build the CPU kernels now (normally done on first use) and print
where they are, or why they cannot be used here."""

import sys

from jaxrnn import kernels


def main() -> int:
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


if __name__ == "__main__":
    sys.exit(main())
