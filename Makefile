# The two commands the README promises:
#   make demo   - the whole chain on embedded defaults (local control plane, SeaweedFS)
#   make test   - install everything the tests need, then lint, type-check and test
.PHONY: test demo bootstrap lint bench

test: bootstrap lint
	.venv/bin/python -m pytest

demo: bootstrap
	.venv/bin/python scripts/demo.py

bootstrap:
	bash scripts/bootstrap.sh

lint:
	.venv/bin/ruff check src tests bench scripts
	.venv/bin/ruff format --check src tests bench scripts
	.venv/bin/mypy

bench: bootstrap
	.venv/bin/python bench/run_all.py
