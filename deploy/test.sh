#!/usr/bin/env bash
# Set up (first time) and run the checks: ruff lint + format, then the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# wordnet-base: the ImageNet taxonomy is regenerated from WordNet and compared in the tests.
apt_install wordnet-base
ensure_venv "train,dev"
cd "$REPO_ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest "$@"
