#!/usr/bin/env bash
# Set up (first time) and run Kestrel's main job, the daemon. Extra arguments go to `kestrel`.
#   bash deploy/run.sh                               # kestrel run on embedded defaults
#   bash deploy/run.sh run --config kestrel.yaml     # the daemon with your configuration
#   bash deploy/run.sh classify my/photos            # any other kestrel command
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# mosquitto: the broker `kestrel run` starts when no configuration names one.
apt_install mosquitto
ensure_venv "$VENV" ""
if [ "$#" -eq 0 ]; then
    set -- run
fi
exec "$VENV/bin/kestrel" "$@"
