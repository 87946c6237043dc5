# Works on a fresh machine with only Python 3 (>= 3.10): creates .venv, installs, runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test test-browser docs demo app bench benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -c "import cv2, trackeval, trackers, av, ray, gradio"  # the install is whole: video, metrics, peers, batch, app
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The web page in headless Chromium (needs: apt-get install chromium chromium-driver; about 4 minutes).
test-browser: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m browser

# The documentation site into site/ (MkDocs Material; --strict: a broken link or reference fails the build).
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "documentation: site/index.html"

# The demo: the shipped demo model tracks two concepts in a generated clip, then scores itself.
demo: $(VENV)/.installed
	$(BIN)/sam3video track demos/shapes/video.mp4 --prompt "yellow circle" --prompt "green triangle" --out runs/demo
	$(BIN)/sam3video eval --gt demos/shapes/gt/yellow_circle/gt.txt demos/shapes/gt/green_triangle/gt.txt \
		--pred runs/demo/tracks.yellow_circle.txt runs/demo/tracks.green_triangle.txt --json runs/demo/eval.json
	@echo "overlay video: runs/demo/overlay.mp4   MOT: runs/demo/tracks.txt   MOTS: runs/demo/tracks.mots.txt"

# The local web page on the demo clip (the demo video model: detector and tracker): open the address it prints.
app: $(VENV)/.installed
	$(BIN)/sam3video app demos/shapes/video.mp4

# The tracking benchmark on 20 held-out synthetic clips (about 20 minutes on 2 cores).
benchmark: $(VENV)/.installed
	$(BIN)/python -m sam3video.eval.benchmark --out runs/benchmark

bench: $(VENV)/.installed
	$(BIN)/python tools/bench_detector.py --config configs/sam3.toml

clean:
	rm -rf $(VENV) build *.egg-info
