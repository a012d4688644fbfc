# `make demo` and `make test` create .venv and install into it when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	# facenet-pytorch (optional MTCNN detector) pins torch<2.3 and numpy<2; its code runs on current releases.
	$(PY) -m pip install --quiet --no-deps "facenet-pytorch>=2.5"
	$(PY) -c "import torch, dlib, face_recognition_models, facenet_pytorch, ray"
	touch $(STAMP)

# The main job on the embedded default: hallucinate the bundled sample faces with the shipped weights.
demo: $(STAMP)
	$(VENV)/bin/augmentor run --out $(DEMO_OUT)
	@echo "open $(DEMO_OUT)/preview.png (original | masked | hallucinated), images in $(DEMO_OUT)/images"

# Every test; test-fast leaves out the ones marked slow (Ray clusters, kill tests, whole-model passes).
test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check augmentor pipelines recognition tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
