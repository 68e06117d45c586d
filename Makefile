# grantlink — every command a developer or CI needs. `make run` and `make test` install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAM_VENV := .venv-sam
PORT ?= 3000
CODE := layers/grantlink/python/grantlink functions infra tests bench


.PHONY: help install system browser run test unit security integration fuzz lint openapi tenant redirects key build deploy bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with the pinned dependencies

system: ## the pinned npm packages (npm ci)
	bash infra/scripts/install-system.sh

browser: ## Debian's chromium for the browser tests (needs root for apt the first time)
	bash infra/scripts/install-system.sh --browser

run: install system ## start the embedded local stack on 127.0.0.1:$(PORT) (Ctrl-C stops it)
	$(BIN)/python -m infra.local --port $(PORT)

test: install system browser lint ## everything CI runs: lint, then every test, with branch coverage ≥ 90% on the layer
	$(BIN)/python -m pytest tests/fuzz --cov=grantlink --cov-branch --cov-report=
	$(BIN)/python -m pytest -n 2 --dist loadfile --ignore=tests/fuzz \
		--cov=grantlink --cov-branch --cov-append --cov-report=term:skip-covered --cov-fail-under=90

unit: install ## only the fast tests (no local stack): tests/unit and the in-process part of tests/security
	$(BIN)/python -m pytest tests/unit tests/security -m "not integration"

integration: install system ## the API over real HTTP against a local stack (started and stopped by the tests)
	$(BIN)/python -m pytest tests/integration

security: install system ## the security suite: one module per SECURITY.md section (starts a local stack)
	$(BIN)/python -m pytest tests/security

fuzz: install system ## schemathesis over the OpenAPI document against a local stack, 300 examples per operation
	GRANTLINK_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest tests/fuzz -q

lint: install ## ruff, mypy and cfn-lint
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	for f in functions/*/app.py; do $(BIN)/mypy --follow-imports=silent "$$f" || exit 1; done
	$(BIN)/cfn-lint template.yaml

openapi: install ## regenerate openapi.json from the resolvers
	$(BIN)/python -m infra.openapi

tenant: install ## create a tenant: make tenant NAME=acme [SCOPES=links:write,...] [REDIRECTS=https://…] [STACK=…]
	@test -n "$(NAME)" || { echo "usage: make tenant NAME=acme [SCOPES=...] [REDIRECTS=...] [STACK=...]"; exit 2; }
	@$(BIN)/python -m infra.scripts.tenant --name "$(NAME)" --scopes "$(SCOPES)" --redirects "$(REDIRECTS)" --stack "$(STACK)"

redirects: install ## replace a tenant's redirect allow-list: make redirects TENANT=tnt_… REDIRECTS=https://a,https://b
	@test -n "$(TENANT)" || { echo "usage: make redirects TENANT=tnt_... REDIRECTS=https://app.example.com [STACK=...]"; exit 2; }
	@$(BIN)/python -m infra.scripts.tenant --tenant-id "$(TENANT)" --redirects "$(REDIRECTS)" --stack "$(STACK)"

key: install ## add an API key to a tenant: make key TENANT=tnt_… [SCOPES=links:write,...] [STACK=…]
	@test -n "$(TENANT)" || { echo "usage: make key TENANT=tnt_... [SCOPES=...] [STACK=...]"; exit 2; }
	@$(BIN)/python -m infra.scripts.tenant --tenant-id "$(TENANT)" --add-key --scopes "$(SCOPES)" --stack "$(STACK)"

$(SAM_VENV)/bin/sam:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check aws-sam-cli==1.170.0

build: $(SAM_VENV)/bin/sam ## sam build (SAM CLI lives in its own virtual environment)
	$(SAM_VENV)/bin/sam build

deploy: build ## sam deploy --guided
	$(SAM_VENV)/bin/sam deploy --guided

bench: install ## run the benchmarks and write bench/RESULTS.md
	$(BIN)/python -m bench

clean: ## remove build output and caches (not .venv)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov test-artifacts
