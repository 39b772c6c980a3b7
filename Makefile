# Entry points; scripts/setup.sh does the real set-up and is cheap when nothing changed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TARGET ?= results/adroit/relocate/eval.json
CORES ?= all
PYTEST_ARGS ?=
# Offscreen MuJoCo rendering without a display; override with MUJOCO_GL=osmesa.
MUJOCO_GL ?= egl
export MUJOCO_GL

.PHONY: setup run test smoke doctor clean-venv pull

setup:
	bash scripts/setup.sh

# Targets go before options: snakemake can read a trailing target as an option value.
run: setup
	$(VENV)/bin/snakemake $(TARGET) --cores $(CORES)

# KUBM_PYTEST_RC_FILE (set by .ci/run) receives pytest's own exit code, which make
# would otherwise flatten to 2.
test: setup
	@rc=0; $(PY) -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ -n "$${KUBM_PYTEST_RC_FILE:-}" ]; then echo $$rc > "$$KUBM_PYTEST_RC_FILE"; fi; \
	exit $$rc

smoke: setup
	$(PY) -m pytest -q -m smoke $(PYTEST_ARGS)

doctor:
	@test -x $(VENV)/bin/kubm || { echo "no $(VENV)/bin/kubm: run 'make setup' first"; exit 1; }
	$(VENV)/bin/kubm doctor

clean-venv:
	rm -rf $(VENV)

# Fetch what dvc.lock records (features and flow AEs; PULL="--all" for raw data too,
# PULL="adroit/relocate" for one task) and check `dvc status` is clean: `kubm pull` exits
# non-zero, naming the fix, when the remote is unreachable, empty or missing an object.
# Then mark the pulled files up to date for Snakemake (DVC restores them with fresh mtimes);
# a pulled store built under another config is still refused by the stage that reads it.
PULL ?=
PROFILE ?= config/study.yaml
.PHONY: pull
pull: setup
	$(VENV)/bin/kubm pull $(PULL)
	$(VENV)/bin/snakemake $(TARGET) --touch --cores 1 --configfile $(PROFILE)

# The smoke DAG through SLURM (workflow/profiles/slurm, docs/slurm.md): scripts/slurm/up.sh
# installs SLURM if missing (Debian packages; root or sudo) and brings up a single-node cluster
# on this machine, then tests/test_slurm.py submits the DAG to it with the profile.
SLURM_STATE ?= /var/tmp/kubm-slurm
.PHONY: test-slurm
test-slurm: setup
	$(PY) -m pip install --no-input -q -c constraints.txt -e '.[slurm]'
	KUBM_SLURM_STATE=$(SLURM_STATE) bash scripts/slurm/up.sh
	SLURM_CONF=$(SLURM_STATE)/etc/slurm.conf KUBM_SLURM_STATE=$(SLURM_STATE) KUBM_SLURM=1 \
		$(PY) -m pytest -q -m slurm tests/test_slurm.py $(PYTEST_ARGS)
