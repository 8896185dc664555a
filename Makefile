# Two commands do everything (see README.md):
#   make book   - set up .venv if needed, then build the HTML book into _build/html
#   make test   - set up .venv if needed, build the book strictly, run every test
# and one for the package alone under another interpreter (CI runs it on the
# highest supported Python with the floor versions of every dependency):
#   make test-python PY=/path/to/python3.13 CONSTRAINTS=constraints-floors.txt
#
# PYTHON is the interpreter of .venv (any Python 3.11 to 3.13: Debian's own
# /usr/bin/python3 works). PyTorch: TORCH names the wheel to install first. The
# default, torch==2.13.0, is a CPU build on the course's CI machines. On a Linux
# laptop without an NVIDIA GPU, `make test TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"`
# avoids downloading the CUDA build.

PYTHON     ?= python3
# tests at a time (pytest-xdist workers; each test module and each notebook stays on one worker);
# TEST_JOBS=0 runs every test in one process
TEST_JOBS  ?= 2
VENV       ?= .venv
BIN        := $(VENV)/bin
TORCH      ?= torch==2.13.0
TORCH_ARGS ?=
STAMP      := $(VENV)/.installed
# nbgrader shells out to alembic and jupyter: the venv's bin/ must be on PATH
RUN        := PATH="$(abspath $(BIN)):$$PATH" PYTHONHASHSEED=0
# the instructor repository also runs the lab solutions with nbval (the student edition has none)
NBVAL      := $(if $(wildcard solutions),solutions --nbval-lax)
XDIST      := $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder)
# extras of pyproject.toml that .venv gets (the instructor repository adds `instructor` below)
EXTRAS     := book,labs,test

# The package's own tests: everything but the book, the labs and the instructors' tooling.
PACKAGE_TESTS := $(filter-out tests/test_book.py tests/test_prose_numbers.py tests/test_site.py tests/test_labs.py tests/test_student_edition.py tests/test_grading.py tests/test_leaks.py tests/test_setup_cells.py tests/test_integrity.py tests/test_intake.py tests/test_incremental.py tests/test_report.py,$(wildcard tests/test_*.py))
PY          ?=
CONSTRAINTS ?= constraints.txt
PYVENV      := _build/venv-test-python

.PHONY: book test test-python test-python-venv test-python-run install clean-book clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(RUN) $(BIN)/jupyter-book build . --all -W -n --keep-going

test: book
	$(RUN) $(BIN)/python -m pytest $(XDIST) tests $(NBVAL)

# A fresh venv for PY, the package installed from a wheel (not editable) with the
# versions in CONSTRAINTS, and the package's tests run against that install.
# (test-python-venv and test-python-run are its two halves: CI installs while it builds the book)
test-python: test-python-venv test-python-run

test-python-venv:
	@test -n "$(PY)" || { echo "usage: make test-python PY=/path/to/python [CONSTRAINTS=constraints-floors.txt]"; exit 2; }
	rm -rf $(PYVENV) $(PYVENV)-src
	$(PY) -m venv $(PYVENV)
	$(PYVENV)/bin/python -m pip install --quiet --upgrade pip
	# built from a copy: building writes build/ and *.egg-info, and CI runs this beside `make test`
	mkdir -p $(PYVENV)-src
	tar --exclude=./_build --exclude=./.venv --exclude=./.git --exclude=./build -cf - . | tar -xf - -C $(PYVENV)-src
	$(PYVENV)/bin/python -m pip install --quiet -c $(CONSTRAINTS) "$(abspath $(PYVENV)-src)[test]"
	rm -rf $(PYVENV)-src

test-python-run:
	@test -x $(PYVENV)/bin/python || { echo "no $(PYVENV): run make test-python-venv PY=... first"; exit 2; }
	cd tests && PYTHONHASHSEED=0 ../$(PYVENV)/bin/python -m pytest $(XDIST) $(PACKAGE_TESTS:tests/%=%) -p no:cacheprovider

# >>> instructor only (dropped from the student edition)
.PHONY: labs student-edition
EXTRAS     := $(EXTRAS),instructor
# regenerate the student versions of the labs (labs/) from solutions/
labs: $(STAMP)
	$(RUN) $(BIN)/course-generate

# the tree students may see: make student-edition DEST=../course-student REPO_URL=https://github.com/ORG/REPO
student-edition: $(STAMP)
	@test -n "$(DEST)" && test -n "$(REPO_URL)" || { echo "usage: make student-edition DEST=folder REPO_URL=https://github.com/ORG/REPO"; exit 2; }
	$(RUN) $(BIN)/course-student-edition "$(DEST)" --repo-url "$(REPO_URL)"
# <<< instructor only

clean-book:
	rm -rf _build/html _build/.doctrees

clean: clean-book
	rm -rf _build $(VENV)
