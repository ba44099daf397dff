# Two commands do all the set-up on a fresh machine:
#   make demo   - venv (unless one is active), CPU torch 2.13.0, the package, demo data, the demo run
#   make test   - the same install, then the whole test suite
# Use an active virtualenv if there is one, otherwise create .venv here.
ifdef VIRTUAL_ENV
PYTHON ?= $(VIRTUAL_ENV)/bin/python
else
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
endif
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=
STAMP := $(dir $(PYTHON)).nest_ext-installed

.PHONY: install demo test test-fast clean

$(PYTHON):
	python3 -m venv $(VENV)

$(STAMP): setup.py | $(PYTHON)
	$(PYTHON) -m pip install -q --upgrade pip
	# torch first, so the package's torch range is already met and no CUDA build is pulled
	$(PYTHON) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PYTHON) -m pip install -q torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

demo: install
	$(PYTHON) tools/make_demo_data.py    # demo_data/: NEST corpus + two-speaker separation set
	$(PYTHON) train.py                   # NEST pretraining demo (config/nest_demo.yaml)
	$(PYTHON) tools/run_demo.py          # MossFormer2: train 160 steps, separate a mixture into demo_out/

test: install
	$(PYTHON) -m pytest -q -ra $(PYTEST_ARGS)          # tests/ and the package's doctests (pytest.ini)

test-fast: install
	$(PYTHON) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf .venv nemo_experiments demo_data demo_out .pytest_cache
