#!/usr/bin/env bash
# Install Kestrel as a systemd service on Raspberry Pi OS (bookworm: Python 3.11; trixie:
# Python 3.13, 64-bit) or another Debian-based Linux. Run from a checkout of this repository:
#
#   sudo bash deploy/install-pi.sh [--with-broker] [--coral | --coral-max] [--no-picamera]
#
# What it does (idempotent: run it again after `git pull` to update):
#   1. apt: python3-venv, rsync, python3-picamera2 (Raspberry Pi camera stack), optionally
#      mosquitto and Coral's Edge TPU runtime (from Coral's own apt repository);
#   2. creates the system user `kestrel` (groups video, plugdev, apex when they exist);
#   3. copies this checkout to /opt/kestrel (root-owned, read-only to the service);
#   4. creates /opt/kestrel/.venv with --system-site-packages (so apt's picamera2 and libcamera
#      are importable) and installs Kestrel into it, keeping numpy's major version equal to
#      apt's (the picamera2 numpy trap, see deploy/README.md), then checks the result;
#   5. writes /etc/kestrel/kestrel.yaml from an example if it does not exist (never
#      overwrites), installs deploy/kestrel.service, enables and (re)starts it.
# See deploy/README.md for every option.
set -euo pipefail
# Whatever root's umask is, the service user must be able to read the code and the venv.
umask 022

# Debian's Python: apt's picamera2 and libcamera bindings are installed for it alone.
PYTHON=/usr/bin/python3
PREFIX=/opt/kestrel
CONFIG_DIR=/etc/kestrel
UNIT_PATH=/etc/systemd/system/kestrel.service
SERVICE_USER=kestrel
STATE_DIR=/var/lib/kestrel
WITH_BROKER=0
CORAL=""
PICAMERA=auto
CONFIG_EXAMPLE=""
START=1

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<EOF
Usage: sudo bash deploy/install-pi.sh [options]

  --with-broker         also install mosquitto (local broker on 127.0.0.1:1883) and its clients
  --coral               add Coral's apt repository and install libedgetpu1-std (Edge TPU)
  --coral-max           same with libedgetpu1-max (faster, runs hotter)
  --no-picamera         do not install python3-picamera2 (USB / RTSP cameras only, non-Pi boxes)
  --prefix DIR          install directory (default $PREFIX)
  --config-example FILE starting /etc/kestrel/kestrel.yaml if none exists
                        (default: deploy/examples/minimal.yaml)
  --no-start            install and enable, but do not (re)start the service
  --print-paths         print the paths this script installs to, then exit (no root needed)
  -h, --help            this text
EOF
}

die() {
    echo "install-pi: error: $*" >&2
    exit 1
}
say() { echo "install-pi: $*"; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --with-broker) WITH_BROKER=1 ;;
        --coral) CORAL=std ;;
        --coral-max) CORAL=max ;;
        --no-picamera) PICAMERA=0 ;;
        --prefix)
            [ "$#" -ge 2 ] || die "--prefix needs a directory"
            PREFIX="$2"
            shift
            ;;
        --config-example)
            [ "$#" -ge 2 ] || die "--config-example needs a file"
            CONFIG_EXAMPLE="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
            shift
            ;;
        --no-start) START=0 ;;
        --print-paths) PRINT_PATHS=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown option: $1"
            ;;
    esac
    shift
done

VENV="$PREFIX/.venv"
KESTREL="$VENV/bin/kestrel"
CONFIG="$CONFIG_DIR/kestrel.yaml"
[ -n "$CONFIG_EXAMPLE" ] || CONFIG_EXAMPLE="$SRC/deploy/examples/minimal.yaml"

if [ "${PRINT_PATHS:-0}" = 1 ]; then
    printf 'prefix=%s\nvenv=%s\nkestrel=%s\nconfig=%s\nunit=%s\nstate_dir=%s\nuser=%s\n' \
        "$PREFIX" "$VENV" "$KESTREL" "$CONFIG" "$UNIT_PATH" "$STATE_DIR" "$SERVICE_USER"
    exit 0
fi

# Root is needed for apt, the user, /opt, /etc and systemd; re-run through sudo if we are not.
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root (sudo is not installed)"
    exec sudo -- bash "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/device" ]; then
    die "$SRC does not look like a Kestrel checkout (no pyproject.toml / device/)"
fi
[ -f "$CONFIG_EXAMPLE" ] || die "config example $CONFIG_EXAMPLE not found"

# --- 0. The platform -------------------------------------------------------------------
ARCH="$(dpkg --print-architecture)"
case "$ARCH" in
    arm64 | amd64) ;;
    armhf | armel)
        die "32-bit ARM ($ARCH) is not supported: the TensorFlow Lite runtime (ai-edge-litert)" \
            "ships 64-bit wheels only. Install the 64-bit Raspberry Pi OS (Pi 3, 4, 5, Zero 2 W)."
        ;;
    *) say "warning: untested architecture $ARCH" ;;
esac
# shellcheck disable=SC1091
CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")"
say "platform: $CODENAME, $ARCH"

# --- 1. System packages ----------------------------------------------------------------
is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

APT_UPDATED=0
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -q
        APT_UPDATED=1
    fi
    say "installing ${missing[*]}"
    # No recommends: python3-picamera2 recommends a desktop (Qt, OpenGL) a headless box
    # does not need.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

apt_install python3 python3-venv rsync ca-certificates
say "python: $("$PYTHON" --version 2>&1)"

if [ "$PICAMERA" = auto ]; then
    # python3-picamera2 is in Raspberry Pi OS's archive, not in Debian's.
    if [ "$APT_UPDATED" = 0 ] && ! apt-cache show python3-picamera2 >/dev/null 2>&1; then
        apt-get update -q
        APT_UPDATED=1
    fi
    if apt-cache show python3-picamera2 >/dev/null 2>&1; then
        PICAMERA=1
    else
        die "python3-picamera2 is not available from apt (not Raspberry Pi OS?)." \
            "Re-run with --no-picamera to use USB / RTSP cameras only."
    fi
fi
if [ "$PICAMERA" = 1 ]; then
    # From apt, not pip: libcamera's Python bindings exist only as Raspberry Pi OS packages
    # (and pip's picamera2 would need libcap-dev to build python-prctl).
    apt_install python3-picamera2
fi

if [ "$WITH_BROKER" = 1 ]; then
    # Debian's default configuration listens on 127.0.0.1:1883 only, without passwords; for
    # a broker that other machines use, see deploy/mosquitto/README.md (TLS + passwords).
    apt_install mosquitto mosquitto-clients
    systemctl enable --now mosquitto 2>/dev/null || say "warning: could not start mosquitto"
fi

if [ -n "$CORAL" ]; then
    # As Coral's documentation says (coral.ai/docs/accelerator/get-started), with the key in
    # its own keyring instead of the deprecated apt-key.
    apt_install curl gnupg
    KEYRING=/etc/apt/keyrings/coral-edgetpu.gpg
    LIST=/etc/apt/sources.list.d/coral-edgetpu.list
    if [ ! -s "$KEYRING" ]; then
        install -d -m 0755 /etc/apt/keyrings
        curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
            | gpg --dearmor --yes -o "$KEYRING"
        chmod 0644 "$KEYRING"
    fi
    REPO_LINE="deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt coral-edgetpu-stable main"
    if [ ! -f "$LIST" ] || ! grep -qxF "$REPO_LINE" "$LIST"; then
        echo "$REPO_LINE" >"$LIST"
        APT_UPDATED=0
    fi
    # std and max conflict: installing one removes the other.
    apt_install "libedgetpu1-$CORAL"
fi

# --- 2. The service user ---------------------------------------------------------------
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "creating system user $SERVICE_USER"
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "Kestrel camera classifier" "$SERVICE_USER"
fi
# video: cameras (/dev/video*, /dev/media*, /dev/dma_heap); plugdev: Coral USB; apex: Coral PCIe.
for group in video plugdev apex; do
    if getent group "$group" >/dev/null && ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$group"; then
        usermod -aG "$group" "$SERVICE_USER"
        say "added $SERVICE_USER to group $group"
    fi
done

# --- 3. The code -----------------------------------------------------------------------
# The checkout is copied (not linked) so the service runs root-owned files it cannot change,
# and so a later edit in your working copy does not change the running device. Kestrel is
# installed editable from the copy: relative model paths in kestrel.yaml
# (models/imagenet-efficientnet-lite0) resolve against /opt/kestrel.
if [ "$(realpath "$SRC")" != "$(realpath -m "$PREFIX")" ]; then
    say "copying $SRC to $PREFIX"
    install -d -m 0755 "$PREFIX"
    rsync -a --delete --chown=root:root --chmod=D755,F644 \
        --exclude='/.venv*' --exclude='/.git' --exclude='__pycache__' --exclude='*.egg-info' \
        --exclude='/.pytest_cache' --exclude='/.ruff_cache' --exclude='/build' \
        "$SRC/" "$PREFIX/"
    chmod 0755 "$PREFIX"/deploy/*.sh
else
    say "installing in place from $PREFIX"
fi

# --- 4. The virtualenv ---------------------------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/python" ] \
        && grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null \
        && [ "$(readlink -f "$VENV/bin/python")" = "$(readlink -f "$PYTHON")" ]
}
if ! venv_ok; then
    # Missing, made without system site packages, or left over from an older Python (an OS
    # upgrade from bookworm to trixie): start over.
    if [ -e "$VENV" ]; then
        say "recreating $VENV"
        rm -rf "$VENV"
    fi
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi

# Keep numpy's major version equal to apt's: apt's python3-simplejpeg (imported by picamera2)
# is built against it, and a numpy 2 over apt's numpy 1.x breaks `import picamera2`.
SYSTEM_NUMPY="$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
CONSTRAINTS="$VENV/kestrel-constraints.txt"
case "$SYSTEM_NUMPY" in
    1.*)
        # bookworm: numpy < 2 and OpenCV <= 4.11 (the last one built for numpy 1.x).
        cp "$PREFIX/deploy/constraints-pi.txt" "$CONSTRAINTS"
        ;;
    "")
        # No apt numpy (no picamera2): nothing to stay compatible with.
        : >"$CONSTRAINTS"
        ;;
    *)
        # trixie: apt's numpy is 2.x; use exactly it (numpy 1.x has no wheels for Python 3.13).
        echo "numpy==$SYSTEM_NUMPY" >"$CONSTRAINTS"
        ;;
esac
say "pip constraints: $(grep -v -e '^#' -e '^$' "$CONSTRAINTS" | tr '\n' ' ')"

"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e "$PREFIX"
# Byte-compile now: at run time the code is read-only to the service.
"$VENV/bin/python" -m compileall -q "$PREFIX/device" >/dev/null || true

# The check that matters: the imports the daemon needs, in the venv, as the service sees them.
CHECK='import numpy, cv2
from ai_edge_litert.interpreter import Interpreter
print("numpy", numpy.__version__, "| opencv", cv2.__version__, end="")'
if [ "$PICAMERA" = 1 ]; then
    CHECK="import picamera2
$CHECK
print(\" | picamera2 ok\", end=\"\")"
fi
if ! VERSIONS="$("$VENV/bin/python" -c "$CHECK" 2>&1)"; then
    echo "$VERSIONS" >&2
    die "the virtualenv $VENV cannot import what Kestrel needs (above)." \
        "If the message says 'numpy.dtype size changed', a numpy of another major version" \
        "than apt's python3-numpy ($SYSTEM_NUMPY) got into the venv: see 'The numpy trap' in" \
        "$PREFIX/deploy/README.md."
fi
say "venv ok: $VERSIONS"
# And a real inference with the shipped model, as the service user.
runuser -u "$SERVICE_USER" -- "$KESTREL" classify "$PREFIX/models/samples/cat-chelsea.jpg" \
    || die "kestrel classify failed in $VENV (see above)"

# --- 5. Configuration and service ------------------------------------------------------------
install -d -m 0755 "$CONFIG_DIR"
if [ ! -e "$CONFIG" ]; then
    say "writing $CONFIG from $CONFIG_EXAMPLE"
    install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_EXAMPLE" "$CONFIG"
    if ! grep -q '^state_dir:' "$CONFIG"; then
        printf '\n# systemd StateDirectory=kestrel: the message queue and snapshots.\nstate_dir: %s\n' \
            "$STATE_DIR" >>"$CONFIG"
    fi
else
    say "keeping the existing $CONFIG"
fi
if [ ! -e "$CONFIG_DIR/kestrel.env" ]; then
    # Secrets for ${VAR} in kestrel.yaml. Read by systemd (as root) only.
    install -m 0600 -o root -g root /dev/null "$CONFIG_DIR/kestrel.env"
    # shellcheck disable=SC2016  # the ${MQTT_PASSWORD} is meant literally
    printf '# Secrets for kestrel.yaml, e.g. mqtt: {password: ${MQTT_PASSWORD}}\n#MQTT_PASSWORD=\n' \
        >"$CONFIG_DIR/kestrel.env"
fi

# The unit, pointing at this prefix.
sed "s#/opt/kestrel/#$PREFIX/#g" "$PREFIX/deploy/kestrel.service" >"$UNIT_PATH.tmp"
chmod 0644 "$UNIT_PATH.tmp"
mv "$UNIT_PATH.tmp" "$UNIT_PATH"

# Validate the configuration as the service will see it (its secrets from kestrel.env).
CONFIG_OK=1
(
    set -a
    # shellcheck disable=SC1091
    . "$CONFIG_DIR/kestrel.env"
    set +a
    runuser -u "$SERVICE_USER" -- "$KESTREL" config check "$CONFIG"
) || CONFIG_OK=0

if [ ! -d /run/systemd/system ]; then
    say "systemd is not running here: the unit is installed but not enabled"
    [ "$CONFIG_OK" = 1 ] || die "$CONFIG is not valid (above)"
elif [ "$CONFIG_OK" = 0 ]; then
    systemctl daemon-reload
    systemctl enable kestrel
    die "$CONFIG is not valid (above). Fix it, then: sudo systemctl restart kestrel"
else
    systemctl daemon-reload
    systemctl enable kestrel
    if [ "$START" = 1 ]; then
        systemctl restart kestrel
        say "kestrel started"
    fi
fi

cat <<EOF

Kestrel is installed.
  configuration   $CONFIG   (check it: $KESTREL config check $CONFIG)
  secrets         $CONFIG_DIR/kestrel.env  (MQTT_PASSWORD=..., mode 0600)
  state           $STATE_DIR  (queue of unsent messages, snapshots)
  code and venv   $PREFIX, $VENV

Check it:
  systemctl status kestrel
  journalctl -u kestrel -f
  mosquitto_sub -v -t 'kestrel/#'      (add -h HOST -u USER -P PASS as your broker needs)
EOF
