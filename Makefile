# talicada developer entry points. The logic lives in scripts/*.sh so it also
# works without make; these targets are thin wrappers.
#
#   make test [ARGS="pytest args"]   venv + services + ruff + mypy + pytest (CI runs this)
#   make run  [ARGS="serve args"]    venv + `talicada serve` (embedded mode by default)
#   make venv                        create/update .venv only
#   make services                    ensure Redis + Mosquitto, print the env to export
#   make services-stop               stop the Redis/Mosquitto that scripts/services.sh started

SHELL := /bin/bash
.DEFAULT_GOAL := test
ARGS ?=

.PHONY: test run venv services services-stop

test:
	@bash scripts/test.sh $(ARGS)

run:
	@bash scripts/serve.sh $(ARGS)

venv:
	@bash scripts/_venv.sh

services:
	@bash scripts/services.sh

services-stop:
	@bash scripts/services.sh stop
