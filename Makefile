# Two commands do everything on a fresh machine:
#   make demo   set up (if needed) and run the workflow on the bundled demo
#   make test   set up (if needed) and run the test suite
VENV ?= .venv
JOBS ?= 4

.PHONY: setup demo test dryrun report clean-demo bench slurm-profile

setup:
	@bash tools/setup_env.sh

demo: setup
	$(VENV)/bin/snakemake -j$(JOBS)

dryrun: setup
	$(VENV)/bin/snakemake -n

test: setup
	$(VENV)/bin/python -m pytest -q -ra

report: demo
	$(VENV)/bin/snakemake --report report.html

clean-demo:
	rm -rf results logs resources/demo report.html

slurm-profile:
	@bash tools/install_slurm_profile.sh
