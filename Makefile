# Feegate — the two commands a newcomer needs:
#   make demo   run the daily fee-control job on a simulated county (SQLite, meter simulator, shipped data)
#   make test   run the whole test suite (on SQLite, then on PostgreSQL: make test-postgres)
# `make demo ARGS='--meters 300 --days 30 --json'` passes flags to `feegate demo`; only the
# demo's output goes to stdout (build chatter goes to stderr), so --json pipes cleanly.

CARGO ?= cargo
ARGS ?=
PLUGINS := tariff-step warning-threshold notice-sms-zh cutoff-habit
PLUGIN_FLAGS := $(foreach p,$(PLUGINS),-p policy-$(p)) -p hostile-policy -p impure-policy -p legacy-policy -p legacy-warning

.PHONY: demo test test-postgres plugins wasm-target fmt lint test-tools

# rustup does not add targets by itself here (RUSTUP_AUTO_INSTALL=0).
wasm-target:
	@rustup target add wasm32-wasip2 >&2

# The policy components, built for wasm32-wasip2 into target/wasm32-wasip2/plugin/.
plugins: wasm-target
	@$(CARGO) build --target wasm32-wasip2 --profile plugin $(PLUGIN_FLAGS)

demo: plugins
	@$(CARGO) run -q -p feegate -- demo $(ARGS)

# Test tools from Debian's packages, installed only when missing (as root, or with sudo when
# there is one): chromium and chromedriver for the browser tests (host/tests/browser.rs), socat
# for the serial-port tests (DL/T 645 and Modbus RTU over a pseudo-terminal pair).
test-tools:
	@missing=""; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium chromium-driver"; \
	command -v socat >/dev/null 2>&1 || missing="$$missing socat"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$(test "$$(id -u)" = 0 || command -v sudo); \
		$$SUDO apt-get update >&2 && $$SUDO apt-get install -y $$missing >&2; \
	fi

# First on SQLite, then the host's tests again on PostgreSQL (test-postgres).
test: plugins test-tools
	$(CARGO) test --workspace
	@$(MAKE) --no-print-directory test-postgres

# The host's tests on PostgreSQL: FEEGATE_TEST_BACKEND=postgres gives every integration test
# that uses a database a throw-away one on the server at FEEGATE_TEST_PG (default
# postgres://root@127.0.0.1:5432/test, where CI has one); where no server answers each
# of them prints "SKIPPED <test>: …" and passes.
test-postgres: plugins test-tools
	FEEGATE_TEST_BACKEND=postgres $(CARGO) test -p feegate --tests

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets
