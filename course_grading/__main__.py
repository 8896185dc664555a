"""``python -m course_grading COMMAND ...``: the toolkit's commands (see :mod:`course_grading.cli`)."""

from course_grading.cli import main

raise SystemExit(main())
