#!/usr/bin/env bash
# Run the whole test suite (what `make test` and .ci/run call).
#
#     scripts/test.sh [pytest args...]        e.g. scripts/test.sh -k store -x
#     make test ARGS="-k store -x"
#
# Steps:
#   1. bootstrap .venv (scripts/_venv.sh: create if missing, `pip install -e '.[test]'`
#      when pyproject.toml is newer than .venv/.installed-stamp);
#   2. ensure Redis, Mosquitto and a one-node Slurm (the machine's, shared by every checkout)
#      and export TALICADA_TEST_{REDIS,MQTT}_URL and TALICADA_TEST_SLURM (scripts/services.sh);
#   3. run `ruff check .`, `ruff format --check .`, `mypy`, `pytest [args]`, in that order.
# All four checks run even if an earlier one fails (so one run shows every problem);
# set TALICADA_FAIL_FAST=1 to stop at the first failure. The exit status is non-zero
# if any step fails, and pytest's exit code 5 ("no tests collected") counts as a failure.
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$TALICADA_ROOT"

say() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

say "virtualenv"
ensure_venv

say "services"
if ! services_env="$(bash "$TALICADA_ROOT/scripts/services.sh")"; then
    echo "test.sh: FAILED — could not provide the test services (see messages above)" >&2
    exit 1
fi
eval "$services_env"
printf '%s\n' "$services_env" | sed -E 's#//([^:@/]*):[^@/]*@#//\1:***@#'

export PATH="$VENV_DIR/bin:$PATH"
unset VIRTUAL_ENV PYTHONHOME

summary=()
failed=0

# run_step NAME CMD...: run CMD, record "NAME ok" / "NAME FAILED(rc)".
run_step() {
    local name=$1 rc=0
    shift
    if ((failed)) && [[ "${TALICADA_FAIL_FAST:-0}" == 1 ]]; then
        summary+=("$name skipped")
        return 0
    fi
    say "$name: $*"
    "$@" || rc=$?
    if ((rc == 5)) && [[ "$name" == pytest ]]; then
        echo "test.sh: pytest collected NO tests (exit code 5) — treating as a failure." >&2
        echo "test.sh: check the -k/-m/path arguments of '$*' and that tests/ is discoverable." >&2
        summary+=("pytest FAILED(no tests collected)")
        failed=1
    elif ((rc != 0)); then
        summary+=("$name FAILED($rc)")
        failed=1
    else
        summary+=("$name ok")
    fi
}

run_step "ruff check" ruff check .
run_step "ruff format" ruff format --check .
run_step mypy mypy
run_step pytest python -m pytest "$@"

elapsed=$((SECONDS - started))
if ((failed)); then
    status=FAILED
else
    status=PASSED
fi
joined="$(printf '%s, ' "${summary[@]}")"
echo
echo "test.sh: $status in ${elapsed}s — ${joined%, }"
exit "$failed"
