# Bootstrap what a fresh machine lacks (uv, the venv, chromium), then run the product.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
PATIENTS ?= 300
SEED ?= 42

.PHONY: demo test test-fast spark lint format bootstrap chromium bench docs docs-serve airflow clean help screenshots

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(BIN)/outcomes: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || { echo ">> installing uv"; $(PYTHON) -m pip install --quiet uv \
	  || $(PYTHON) -m pip install --quiet --user uv; }
	@echo ">> creating $(VENV) from uv.lock"
	$(UV) sync --frozen --inexact --quiet --compile-bytecode  # --inexact: keeps the spark extra once installed
	@touch $@

DOCS_ASSETS := expectations/data_docs_assets

# The CSS, JS and fonts GX Data Docs load from CDNs, from npm (package-lock.json), served beside the docs.
$(DOCS_ASSETS)/node_modules/.package-lock.json: $(DOCS_ASSETS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo ">> installing nodejs and npm (Data Docs assets)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } \
	  || true
	@if command -v npm >/dev/null 2>&1; then \
	  echo ">> installing the Data Docs assets from npm ($(DOCS_ASSETS))"; \
	  cd $(DOCS_ASSETS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.package-lock.json; \
	else echo "!! no npm: the quality pages (GX Data Docs) will load their CSS and JS from CDNs"; fi

bootstrap: $(BIN)/outcomes $(DOCS_ASSETS)/node_modules/.package-lock.json  ## install the locked environment

# The Spark engine only: pyspark and dbt-spark (the `spark` extra) and a Java runtime (Debian's openjdk-17).
$(VENV)/.spark: pyproject.toml uv.lock | $(BIN)/outcomes
	@command -v java >/dev/null 2>&1 || { echo ">> installing a Java runtime (openjdk-17, for Spark)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
	@echo ">> installing the spark extra (pyspark, dbt-spark)"
	$(UV) sync --frozen --inexact --extra spark --quiet --compile-bytecode
	@touch $@

spark: bootstrap $(VENV)/.spark  ## the Spark engine's extra and Java (outcomes transform --engine spark)

chromium:  ## install Debian's chromium (browser tests, PNG export) if missing
	@command -v chromium >/dev/null 2>&1 || { echo ">> installing chromium"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "!! could not install chromium: browser tests will be skipped"; }

demo: bootstrap  ## the nightly refresh end to end on the embedded synthetic clinic
	$(BIN)/outcomes demo --patients $(PATIENTS) --seed $(SEED)

TEST_WORKERS ?= auto
test: bootstrap spark chromium  ## the whole suite, on every core: the unit tier (tests/unit) and the integration tier
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-fast: $(BIN)/outcomes  ## the unit tier only (seconds): rules, settings, parsing, suppression
	$(BIN)/pytest -q tests/unit

lint: bootstrap  ## ruff lint + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: bootstrap
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

REFRESH_SIZES ?= 10,1000,10000,50000

bench: bootstrap  ## benchmarks that print figures (the end-to-end refresh at 50k takes ~15 min)
	$(BIN)/python bench/generator.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/dbt_build.py
	$(BIN)/python bench/refresh.py --sizes $(REFRESH_SIZES)

docs: bootstrap  ## build the dbt docs site (catalogue of every model and column) into dbt_project/target
	@test -f data/warehouse.duckdb || $(MAKE) demo
	cd dbt_project && OUTCOMES_WAREHOUSE=$(CURDIR)/data/warehouse.duckdb DBT_PROFILES_DIR=. ../$(BIN)/dbt docs generate \
	  --quiet --vars '{document_published: true}'
	@echo "dbt docs: $(CURDIR)/dbt_project/target/index.html (serve with: make docs-serve)"

screenshots: bootstrap chromium  ## redraw docs/img/*.png (the README's page images) from data/dashboards, 1400 px wide
	@test -f data/dashboards/relapse.html || $(MAKE) demo
	$(BIN)/python docs/screenshots.py data/dashboards docs/img

DOCS_PORT ?= 8580
docs-serve: docs  ## serve the dbt docs on 127.0.0.1:$(DOCS_PORT) (not 8080: that is Airflow's)
	cd dbt_project && ../$(BIN)/dbt docs serve --host 127.0.0.1 --port $(DOCS_PORT) --no-browser

airflow: bootstrap  ## optional: airflow standalone on 127.0.0.1:8080, sized for two cores (data/airflow)
	AIRFLOW_HOME=$(CURDIR)/data/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__CORE__PARALLELISM=4 AIRFLOW__API__WORKERS=1 PATH=$(CURDIR)/$(BIN):$$PATH \
	sh -c '$(BIN)/airflow db migrate >/dev/null && $(BIN)/airflow pools set duckdb_warehouse 1 "DuckDB writers: one at a time" >/dev/null || exit 1; \
	  echo ">> the DAG starts paused: $(BIN)/airflow dags unpause nightly_outcomes_refresh (or its toggle in the UI)"; \
	  setsid $(BIN)/airflow standalone & pid=$$!; \
	  trap "trap - INT TERM; kill -TERM -$$pid 2>/dev/null; sleep 5; kill -KILL -$$pid 2>/dev/null" INT TERM; \
	  wait $$pid; wait $$pid'

clean:
	rm -rf data .pytest_cache
