#!/usr/bin/env bash
# Sets everything up and runs the main demo: data reweighting on Fashion-MNIST where plain
# training memorises the noise (10,000 training images, 60% of their labels moved to another
# class, 40 epochs), plain training against Meta-Weight-Net, one seed (about 2 minutes on this
# 2-core machine after the build). Arguments go to the demo program and override these settings
# (try --help; e.g. --methods all --seeds 1,2,3 for the full experiment, or --train-size 60000
# --epochs 15 --noise 0.4 for the whole training set; --quick keeps the program's own quick
# setting). Results go to results/; the plot to results/label_noise_weights.png.
set -euo pipefail
DEMO=02_label_noise_fashion_mnist
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/build.sh "$DEMO"
# The demo's setting, for each option not given on the command line (an option may be given once).
settings=()
for pair in "--train-size 10000" "--epochs 40" "--noise 0.6"; do
  option=${pair% *}
  given=0
  for arg in "$@"; do
    if [ "$arg" = "$option" ] || [ "${arg%%=*}" = "$option" ]; then given=1; fi
  done
  if [ "$given" = 0 ] && [[ " $* " != *" --quick "* ]]; then settings+=($pair); fi
done
"build/examples/$DEMO" --out results "${settings[@]}" "$@"
# The plot needs Debian's matplotlib; the demo's numbers do not, so a failure here is not fatal.
if ! /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null 2>&1 ||
    echo "bilevel: python3-matplotlib not available; skipping the plot"
fi
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 scripts/plot_results.py results results/label_noise_weights.png
fi
