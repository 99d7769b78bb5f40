#!/usr/bin/env bash
# Set up (first time) and run the checks: ruff lint + format, the whole test suite, then the
# device tests again under the Raspberry Pi OS profile (numpy 1.26, OpenCV 4.11, as picamera2's
# apt packages need). Extra arguments go to both pytest runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# wordnet-base: the ImageNet taxonomy is regenerated and compared; dataset-fashion-mnist: real
# images for the training tests; mosquitto: the real broker the MQTT tests start and stop;
# chromium + chromium-driver: the web page's browser test (Selenium drives them, no download).
apt_install wordnet-base dataset-fashion-mnist mosquitto mosquitto-clients openssl shellcheck \
    chromium chromium-driver
ensure_venv "$VENV" "train,dev"
cd "$REPO_ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest "$@"

PI_VENV="${KESTREL_PI_VENV:-$REPO_ROOT/.venv-pi}"
ensure_venv "$PI_VENV" "" "numpy==1.26.*" "opencv-python-headless==4.11.0.86" "pytest>=8"
echo "kestrel: device tests under the Raspberry Pi OS profile" \
    "($("$PI_VENV/bin/python" -c 'import numpy, cv2; print("numpy", numpy.__version__, "opencv", cv2.__version__)'))"
# Not again there: the MQTT publisher and queue, model updates and the web page (paho, sqlite,
# tar, HTTP: nothing of numpy or OpenCV that differs between the two profiles).
"$PI_VENV/bin/python" -m pytest tests/device --ignore=tests/device/publish \
    --ignore=tests/device/ota --ignore=tests/device/web "$@"
