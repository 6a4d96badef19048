# Shared by the guest-examples/<lang>/build.sh scripts (sourced, not run).
#
# Tools that take long to install live outside the clone, in $WASMQ_TOOLS (default
# ~/.cache/wasmq/tools, beside the default CARGO_TARGET_DIR), so fresh clones on the same
# machine (CI) reuse them. Every install is pinned and happens only when the pinned version is
# missing; after that every build is offline.

WASMQ_TOOLS="${WASMQ_TOOLS:-$HOME/.cache/wasmq/tools}"
GUESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WIT_DIR="$(cd "$GUESTS_DIR/../wit" && pwd)"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs the Debian packages given that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]} (apt)" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Prints the path of a virtualenv holding exactly the pinned `requirements` file, creating it
# when missing or when the file changed. The venv is named after the file's hash.
pinned_venv() {
    local requirements="$1"
    local hash
    hash=$(sha256sum "$requirements" | cut -c1-16)
    local venv="$WASMQ_TOOLS/venv-$hash"
    if [ ! -f "$venv/.complete" ]; then
        echo "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')(pip, into $venv)" >&2
        rm -rf "$venv"
        mkdir -p "$WASMQ_TOOLS"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            --only-binary=:all: -r "$requirements" >&2
        touch "$venv/.complete"
    fi
    echo "$venv"
}

# True when `output` is missing or older than any of the other files given.
stale() {
    local output="$1"
    shift
    [ -f "$output" ] || return 0
    local input
    for input in "$@"; do
        [ "$input" -nt "$output" ] && return 0
    done
    return 1
}
