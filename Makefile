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
# torch's CPU wheels: on Linux the default index (PyPI) gives a CUDA build of several GB. When this index cannot
# be reached, torch comes from the default index. Empty (TORCH_INDEX_URL=) uses the default index straight away;
# GPU users can point it at e.g. https://download.pytorch.org/whl/cu126, or install their torch first.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
STAMP := $(dir $(PYTHON)).nest_ext-installed

.PHONY: install torch demo test test-fast clean

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip

# torch first, so the package's torch range is already met and pip pulls no CUDA build; kept when installed
torch: | $(PYTHON)
	@$(PYTHON) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PYTHON) -m pip install -q --retries 1 --timeout 30 \
			$(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==$(TORCH_VERSION) \
		|| { echo "torch $(TORCH_VERSION) not installed from $(TORCH_INDEX_URL): using the default index" >&2; \
			$(PYTHON) -m pip install -q torch==$(TORCH_VERSION); }

$(STAMP): setup.py | $(PYTHON) torch
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
