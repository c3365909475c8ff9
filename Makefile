# Two commands do everything on a fresh machine:
#   make demo   set up (if needed) and run the workflow on the bundled demo
#   make test   set up (if needed) and run the test suite
VENV ?= .venv
JOBS ?= 4

.PHONY: setup demo test lint dryrun report clean-demo bench bench-smoke bench-report slurm-profile

setup:
	@bash tools/setup_env.sh

demo: setup
	$(VENV)/bin/snakemake -j$(JOBS)

dryrun: setup
	$(VENV)/bin/snakemake -n

test: setup
	$(VENV)/bin/python -m pytest -q -ra

# Static checks (.ci/run runs them before the tests): ruff's lint and format check on
# every Python file, snakefmt on every Snakemake file, Snakemake's own lint.
FORMATTED_PY ?= .
FORMATTED_SMK ?= workflow
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check $(FORMATTED_PY)
	$(VENV)/bin/snakefmt --check $(FORMATTED_SMK)
	$(VENV)/bin/snakemake --lint

report: demo
	$(VENV)/bin/snakemake --report report.html

clean-demo:
	rm -rf results logs resources/demo report.html

slurm-profile:
	@bash tools/install_slurm_profile.sh

# Speed and fidelity against face-rhythm 0.3.3 (slow, not CI; see benchmarks/README.md)
bench: setup
	bash benchmarks/setup_reference_venv.sh
	$(VENV)/bin/python benchmarks/bench_sessions.py --cases face2,trials40 --reps 3 --ref-one-thread
	$(VENV)/bin/python benchmarks/bench_sessions.py --cases hour,hour_big --reps 1
	$(VENV)/bin/python benchmarks/bench.py --no-setup
	$(VENV)/bin/python benchmarks/bench.py --no-setup --cases face,trials --reps 3 --ref-one-process --scaling '' --no-report --out benchmarks/out/issue19

bench-smoke: setup
	bash benchmarks/setup_reference_venv.sh
	$(VENV)/bin/python benchmarks/bench.py --smoke --no-setup

bench-report:
	$(VENV)/bin/python benchmarks/compare.py
