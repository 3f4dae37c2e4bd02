#!/usr/bin/env bash
# The long schemathesis run (the suite's tests/test_fuzz.py runs a short one).
#
#     scripts/fuzz.sh [SECONDS]        default 240; needs Redis (scripts/services.sh)
#
# Runs tests/test_fuzz.py with a longer time budget: the real application over
# Redis with token authentication, every contract check, all phases but
# schemathesis' coverage phase (see the test's docstring). Exit status 0 only
# with zero server errors and zero contract mismatches.
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$TALICADA_ROOT"
ensure_venv
services_env="$(bash "$TALICADA_ROOT/scripts/services.sh")"
eval "$services_env"
export TALICADA_FUZZ_SECONDS="${1:-240}"
exec "$VENV_PY" -m pytest -q -p no:cacheprovider tests/test_fuzz.py -s
