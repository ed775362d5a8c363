# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Both build .venv from nothing; system packages come from apt-get when missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm chromium \
  gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc wrk \
  rabbitmq-server redis-server
# Is something listening on 127.0.0.1:$(1)? (the brokers the site-worker tests use)
listening = $(PY) -c "import socket; socket.create_connection(('127.0.0.1', $(1)), 1)" 2>/dev/null

.PHONY: demo test lint system-deps brokers clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch first: anything else resolves to the CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[server,agent,dev]"
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# RabbitMQ and Redis, started where they are installed but not running; waits for both.
brokers: $(STAMP) system-deps
	@$(call listening,5672) || rabbitmq-server -detached
	@$(call listening,6379) || redis-server --daemonize yes >/dev/null
	@for i in $$(seq 60); do $(call listening,5672) && $(call listening,6379) && exit 0; \
	  sleep 1; done; echo "RabbitMQ or Redis did not start"; exit 1

demo: $(STAMP)
	$(VENV)/bin/tinymlaas demo

test: $(STAMP) system-deps brokers
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) build *.egg-info
