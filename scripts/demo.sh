#!/usr/bin/env bash
# Sets everything up and runs the main demo. Arguments go to the demo program (try --help).
set -euo pipefail
DEMO=02_label_noise_fashion_mnist
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/build.sh "$DEMO"
exec "build/examples/$DEMO" "$@"
