# Shared set-up for deploy/run.sh and deploy/test.sh: system packages and the virtualenv.
# Idempotent: packages and Python dependencies are installed only when missing or changed.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KESTREL_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PKG...: install the Debian packages that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "kestrel: installing system packages: ${missing[*]}"
        as_root apt-get update -q
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
            "${missing[@]}"
    fi
}

# ensure_venv VENV EXTRAS [PIP_ARGS...]: create the virtualenv and install the project with
# pip extras (e.g. "" or "train,dev") plus any extra requirements; re-installs only when
# pyproject.toml or the arguments change.
ensure_venv() {
    local venv="$1" extras="$2"
    shift 2
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv"
    fi
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    local stamp="$venv/.kestrel-installed"
    local want
    want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1) $extras $*"
    if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
        "$venv/bin/python" -m pip install -q --upgrade pip
        (cd "$REPO_ROOT" && "$venv/bin/python" -m pip install -q -e "$spec" "$@")
        echo "$want" >> "$stamp"
    fi
}
