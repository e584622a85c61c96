#!/usr/bin/env bash
# Sets everything up and runs the main demo: data reweighting on Fashion-MNIST with 40% label
# noise, plain training against Meta-Weight-Net, one seed, 15 epochs (about 4 minutes on 2
# cores). Arguments go to the demo program (try --help; e.g. --methods all --seeds 1,2,3 for
# the full experiment). Results go to results/; the plot to results/label_noise_weights.png.
set -euo pipefail
DEMO=02_label_noise_fashion_mnist
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/build.sh "$DEMO"
"build/examples/$DEMO" --out results "$@"
# The plot needs Debian's matplotlib; the demo's numbers do not, so a failure here is not fatal.
if ! /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null 2>&1 ||
    echo "bilevel: python3-matplotlib not available; skipping the plot"
fi
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 scripts/plot_results.py results results/label_noise_weights.png
fi
