#!/usr/bin/env bash
# Run the broker locally (what `make run` calls):
#
#     scripts/serve.sh [talicada serve args...]     e.g. scripts/serve.sh --port 8080
#     make run ARGS="--port 8080"
#
# Bootstraps .venv with the runtime dependencies only (scripts/_venv.sh; a venv
# the tests already built serves as it is), then execs
# `.venv/bin/talicada serve "$@"` (embedded mode unless the arguments say otherwise).
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$TALICADA_ROOT"
ensure_venv runtime

if [[ ! -x "$VENV_DIR/bin/talicada" ]]; then
    echo "serve.sh: $VENV_DIR/bin/talicada is missing; is [project.scripts] talicada set in pyproject.toml?" >&2
    exit 1
fi
exec "$VENV_DIR/bin/talicada" serve "$@"
