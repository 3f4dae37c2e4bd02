# shellcheck shell=bash
# Virtualenv bootstrap shared by scripts/test.sh, scripts/serve.sh and `make venv`.
#
# Source this file and call `ensure_venv`; it:
#   1. creates .venv with `python3 -m venv` if it is missing or broken
#      (installing Debian's python3-venv first when ensurepip is missing and we are root);
#   2. runs `pip install -e '.[test]'` only when pyproject.toml is newer than
#      .venv/.installed-stamp (or the stamp is missing), then touches the stamp.
#      `ensure_venv runtime` (what `make run` calls) installs only what the
#      broker needs (`pip install -e .`, stamp .installed-runtime-stamp); a venv
#      already installed for the tests serves as it is.
#
# After it returns, VENV_DIR / VENV_PY point at the ready environment.
# Executing this file directly (bash scripts/_venv.sh) just runs ensure_venv.

TALICADA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="$TALICADA_ROOT/.venv"
VENV_PY="$VENV_DIR/bin/python"
VENV_STAMP="$VENV_DIR/.installed-stamp"

_venv_log() { printf 'venv: %s\n' "$*" >&2; }
_venv_die() {
    _venv_log "ERROR: $*"
    return 1
}

# Is "$1" a Python interpreter >= 3.11?
_venv_python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

# Print the interpreter to build the venv with ($PYTHON overrides the search).
_venv_find_python() {
    local candidate
    for candidate in ${PYTHON:+"$PYTHON"} python3 python3.11 python3.12 python3.13; do
        if command -v "$candidate" >/dev/null 2>&1 && _venv_python_ok "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    _venv_die "no Python >= 3.11 found (tried \$PYTHON, python3, python3.11+)"
}

_venv_create() {
    local py
    py="$(_venv_find_python)" || return 1
    _venv_log "creating $VENV_DIR with $(command -v "$py") ($("$py" -V 2>&1))"
    if "$py" -m venv --clear "$VENV_DIR"; then
        return 0
    fi
    # Debian ships ensurepip separately (python3-venv); install it when we can.
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        _venv_log "venv creation failed; installing python3-venv via apt-get"
        timeout 600 apt-get update -q >&2 || _venv_die "apt-get update failed" || return 1
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q \
            -o DPkg::Lock::Timeout=120 python3-venv >&2 ||
            _venv_die "apt-get install python3-venv failed" || return 1
        "$py" -m venv --clear "$VENV_DIR" && return 0
    fi
    _venv_die "'$py -m venv' failed (on Debian: apt-get install python3-venv)"
}

_venv_ensure_locked() {
    if [[ -x "$VENV_PY" ]] && _venv_python_ok "$VENV_PY" &&
        "$VENV_PY" -m pip --version >/dev/null 2>&1; then
        :
    else
        [[ -e "$VENV_DIR" ]] && _venv_log "$VENV_DIR is broken or too old; recreating it"
        _venv_create || return 1
    fi

    local stamp="$VENV_STAMP" target=".[test]" what="with test extras"
    if [[ "${1:-test}" == "runtime" ]]; then
        if _venv_fresh "$VENV_STAMP"; then
            _venv_log "$VENV_DIR is up to date (installed with test extras)"
            return 0
        fi
        stamp="$VENV_DIR/.installed-runtime-stamp" target="." what="(runtime only)"
    fi
    if ! _venv_fresh "$stamp"; then
        _venv_log "installing talicada (editable) $what"
        # Timestamp taken *before* installing, so an edit to pyproject.toml made
        # during the install still triggers a reinstall next time.
        touch "$stamp.new"
        (cd "$TALICADA_ROOT" && "$VENV_PY" -m pip install --progress-bar off -e "$target") >&2 ||
            _venv_die "pip install -e '$target' failed" || return 1
        mv -f "$stamp.new" "$stamp"
    else
        _venv_log "$VENV_DIR is up to date (pyproject.toml not newer than $(basename "$stamp"))"
    fi
}

# Is stamp "$1" there and newer than pyproject.toml?
_venv_fresh() {
    [[ -f "$1" && ! "$TALICADA_ROOT/pyproject.toml" -nt "$1" ]]
}

ensure_venv() {
    local rc=0 extras="${1:-test}"
    # Serialise concurrent bootstraps (two `make test` at once) when flock exists.
    if command -v flock >/dev/null 2>&1; then
        mkdir -p "$TALICADA_ROOT/var"
        exec 8>"$TALICADA_ROOT/var/venv.lock"
        flock -w 900 8 || _venv_die "timed out waiting for $TALICADA_ROOT/var/venv.lock" || return 1
        _venv_ensure_locked "$extras" || rc=$?
        flock -u 8
        exec 8>&-
    else
        _venv_ensure_locked "$extras" || rc=$?
    fi
    return "$rc"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    ensure_venv
    _venv_log "ready: $VENV_DIR"
fi
