# Two commands: `make run` and `make test`. Everything else is a step of theirs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# One worker with threads: in-process rate limits and caches stay exact without Redis.
# The access log leaves out query strings, so nothing a client put there is logged.
# The webhook delivery worker runs beside it and stops with it (Ctrl-C, or gunicorn exiting).
run: install
	$(BIN)/flask --app app db upgrade
	$(BIN)/flask --app app keysmith deliver & deliver=$$!; \
	trap 'kill $$deliver 2>/dev/null; wait $$deliver' EXIT INT TERM; \
	$(BIN)/gunicorn --workers 1 --threads 8 --bind 127.0.0.1:5000 \
		--access-logfile - --access-logformat '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)sB %(M)sms %({x-request-id}o)s' \
		'app:create_app()'

test: install
	$(BIN)/python -m pytest -n 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
