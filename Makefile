# Everything CI runs is a target here; .ci/run calls `make test`.
#
# Two virtual environments: .venv on the minimum supported Python (3.11 here) for the core
# suite, and .venv312 for what needs Python 3.12 (axio, the framework integrations, and the
# benchmark against axio-context-sqlite).
PYTHON ?= python3
PYTHON312 ?= $(shell for p in python3.12 $(wildcard /root/.pyenv/versions/3.12*/bin/python3.12); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo $$p; break; }; done)
VENV ?= .venv
VENV312 ?= .venv312
VENV_SA20 ?= .venv-sa20
BIN := $(VENV)/bin
BIN312 := $(VENV312)/bin
STAMP := $(VENV)/.installed
STAMP312 := $(VENV312)/.installed
# The peers' own sdists (their READMEs and test suites run against our drop-ins).
PEERS ?= .peers
PEER_SDISTS := axio-context-sqlite==0.12.2 agentstr-sdk==0.6.15 openai-agents==0.25.0
PEERS_STAMP := $(PEERS)/.downloaded

.PHONY: venv venv312 peers demo test pytest pytest312 compat unit contract lint format bench docs clean scale-servers scale-servers-or-say browser ui-screenshots

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs,postgresql,mysql,encryption,ui]'
	touch $(STAMP)

venv312: $(STAMP312)

$(STAMP312): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: set PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(BIN312)/python -m pip install --quiet --upgrade pip
	$(BIN312)/python -m pip install --quiet -e '.[dev,postgresql,mysql,encryption,axio,openai-agents,langchain,langgraph,adk,pydantic-ai]' \
		axio-context-sqlite 'langgraph-checkpoint-conformance==0.0.2' \
		'langgraph-checkpoint-sqlite==3.1.2' 'langgraph-checkpoint-postgres==3.2.0'
	# agentstr-sdk's own dependencies are dozens of heavy packages; its database module needs
	# none of them, so the tests load it from a side directory (CONVOSTORE_AGENTSTR_PATH).
	$(BIN312)/python -m pip install --quiet --no-deps --target $(VENV312)/agentstr \
		agentstr-sdk==0.6.15 pynostr coincurve tlv8
	touch $(STAMP312)

# Downloaded, never committed: tests/frameworks/test_peer_suites.py runs the tests these
# sdists ship with our conftest swapping in convostore's drop-ins (the Makefile is the
# only place that names the versions).
peers: $(PEERS_STAMP)

$(PEERS_STAMP): Makefile $(STAMP312)
	rm -rf $(PEERS) && mkdir -p $(PEERS)
	$(BIN312)/python -m pip download --quiet --no-deps --no-binary :all: -d $(PEERS) $(PEER_SDISTS)
	for f in $(PEERS)/*.tar.gz; do tar -xzf $$f -C $(PEERS); done
	touch $@

# Migrate the embedded SQLite default (convostore.db), write a conversation through both
# interfaces in one process, and read it back in another.
demo: venv
	$(BIN)/alembic upgrade head
	$(BIN)/python examples/quickstart.py write
	$(BIN)/python examples/quickstart.py read

# The whole suite: lint and types, every test on every reachable backend (with CI=true,
# every backend is required), then the Python 3.12 framework tests (tests/frameworks).
test: lint scale-servers-or-say pytest pytest312 compat

pytest: venv venv312
	CONVOSTORE_TEST_PY312=$(abspath $(BIN312))/python $(BIN)/python -m pytest $(PYTEST_ARGS)

pytest312: venv312 peers
	CONVOSTORE_AGENTSTR_PATH=$(abspath $(VENV312))/agentstr CONVOSTORE_PEERS_DIR=$(abspath $(PEERS)) \
		$(BIN312)/python -m pytest tests/frameworks $(PYTEST_ARGS)

# The oldest SQLAlchemy series we support (2.0): the contract and unit suites on every
# backend, for what depends on SQLAlchemy's adapter layer (convostore.sql.sqlite_driver, the
# one-statement PostgreSQL append, the MySQL FOR UPDATE read-back).
compat: $(VENV_SA20)/.installed
	$(VENV_SA20)/bin/python -m pytest tests/contract tests/unit -q $(PYTEST_ARGS)

$(VENV_SA20)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_SA20)
	$(VENV_SA20)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_SA20)/bin/python -m pip install --quiet -e '.[dev,postgresql,mysql,encryption]' 'sqlalchemy[asyncio]>=2.0.36,<2.1'
	touch $@

# What the suite's "running at scale" backends need on this machine (run as root, by
# .ci/run): Debian's PgBouncer for the `pgbouncer` backend, and a pg_hba.conf line letting
# pg_basebackup stream from the local PostgreSQL for the `replica` backend (the standby
# itself is made and removed by the tests). Each step is skipped when already done.
PG_HBA ?= $(shell psql -h 127.0.0.1 -U postgres -Atc 'SHOW hba_file' 2>/dev/null)

scale-servers:
	command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer; }
	@test -n "$(PG_HBA)" || { echo "PostgreSQL is not running on 127.0.0.1:5432"; exit 1; }
	grep -Eq '^host[[:space:]]+replication[[:space:]]' $(PG_HBA) || { \
		echo 'host replication all 127.0.0.1/32 trust' >> $(PG_HBA) && \
		psql -h 127.0.0.1 -U postgres -Atqc 'SELECT pg_reload_conf()'; }

# What `make test` does first, so a newcomer's run is CI's: as root (CI, a container) it
# sets up the pgbouncer and replica backends' needs with scale-servers and the viewer's
# browser with browser; otherwise, or if that fails outside CI, it says in one line what
# the run will skip and how to enable it.
REPLICATION_OK = psql -h 127.0.0.1 -U postgres -Atc \
	"SELECT count(*) > 0 FROM pg_hba_file_rules WHERE 'replication' = ANY(database)" 2>/dev/null | grep -q t
HAVE_PGBOUNCER = { command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer; }

scale-servers-or-say:
	@if [ "$$(id -u)" = 0 ]; then \
		$(MAKE) --no-print-directory scale-servers >/dev/null || { \
			case "$$CI" in true|1|yes) exit 1;; esac; \
			echo "make test: could not set up PgBouncer / replication (see: make scale-servers);" \
				"the pgbouncer and replica backends will be skipped"; }; \
		$(MAKE) --no-print-directory browser >/dev/null || { \
			case "$$CI" in true|1|yes) exit 1;; esac; \
			echo "make test: could not install chromium (see: make browser);" \
				"the viewer's browser tests will be skipped"; }; \
	else \
		if ! $(HAVE_PGBOUNCER) || ! $(REPLICATION_OK); then \
			echo "make test: skipping the pgbouncer and replica backends (not set up here);" \
				"enable them with: sudo make scale-servers"; \
		fi; \
		test -x $(CHROMIUM) || echo "make test: skipping the viewer's browser tests" \
			"(no $(CHROMIUM)); enable them with: sudo make browser"; \
	fi

# The browser the viewer's end-to-end tests drive (tests/ui/test_browser.py): Debian's
# chromium, through Playwright with executable_path (Playwright's own download is never
# used). Run as root by .ci/run; skipped when already installed.
CHROMIUM ?= /usr/bin/chromium

browser:
	test -x $(CHROMIUM) || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The screenshots of docs/ui.md, taken in chromium from the demo database of
# examples/ui_demo.py (written to a scratch file, then removed).
ui-screenshots: venv browser
	$(BIN)/python examples/ui_demo.py .ui-demo.db --screenshots docs/images/ui
	rm -f .ui-demo.db .ui-demo.db-wal .ui-demo.db-shm

# Quick loops while developing, on .venv alone (no Python 3.12 environment): the unit
# tests, and the contract suites on the backends named by DB (e.g. DB=sqlite,postgresql).
DB ?= memory,sqlite

unit: venv
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

contract: venv
	$(BIN)/python -m pytest tests/contract -q --db $(DB) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests migrations examples bench docs/_griffe
	$(BIN)/ruff format --check src tests migrations examples bench docs/_griffe
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format src tests migrations examples bench
	$(BIN)/ruff check --fix src tests migrations examples bench

# The documentation site, as tests/test_mkdocs.py builds it (every warning is an error).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# bench/ui.py: the viewer's server time (convostore ui) on SQLite at 100,000 sessions and
# a 100,000-message session.
bench: venv venv312
	$(BIN312)/python bench/bench.py $(BENCH_ARGS)
	$(BIN)/python bench/ui.py
	$(BIN312)/python bench/langgraph_saver.py $(LANGGRAPH_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV312) $(VENV_SA20) dist build site .mypy_cache .ruff_cache .pytest_cache convostore.db*
