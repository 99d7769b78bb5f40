#!/usr/bin/env bash
# Set up (first time) and run Kestrel's main job. Extra arguments go to `kestrel`.
#   bash deploy/run.sh                       # classify the shipped sample photos
#   bash deploy/run.sh classify my/photos    # any kestrel command
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_venv "$VENV" ""
if [ "$#" -eq 0 ]; then
    set -- classify "$REPO_ROOT/models/samples"
fi
exec "$VENV/bin/kestrel" "$@"
