"""course_grading: the instructors' toolkit of the course *Generative AI with Large Language Models*.

It generates the student versions of the labs, takes in a course platform's
download of submissions, grades them in a sandbox, reports on a class,
checks a release for leaked solutions and hidden tests, and publishes the
student edition. Students never install it: the student
edition (which it writes) leaves this package out, and its ``pyproject.toml``
names neither the package nor its commands. Install it in the instructor
repository with ``pip install -e ".[instructor]"``.

================  ==========================================================
module            what it holds
================  ==========================================================
``course``        the course on disk: its root, nbgrader configuration, labs
``cells``         a notebook's cells: text, nbgrader metadata, the markers
``labs``          graded parts; generating the student versions (nbgrader)
``repair``        matching a damaged submission back to the release
``flags``         what a submission's code does that deserves a look
``sandbox``       the jail: Linux namespaces, bind mounts and rlimits
``kernel``        a Jupyter kernel in the jail; nbgrader's Execute with nonces
``intake``        a course platform's bulk download laid out as submitted/
``preflight``     the lab's imports checked in the jail before grading
``autograde``     grading every new or changed submission of a lab into the gradebook
``integrity``     the passed tests re-run without IPython: tampering, delegation
``review``        submissions held for tampering: accept or reject
``results``       a lab's grades on disk (CSV, JSON), merged run after run
``report``        one HTML page per lab: figures, parts missed, held, flags
``leaks``         the one leak check: no solution line in what is published
``manifest``      what goes into the student edition, and what never does
``edition``       writing the student edition
``cli``           the commands
================  ==========================================================

Commands (see :mod:`course_grading.cli`): ``course-generate``,
``course-intake``, ``course-grade``, ``course-review``, ``course-report``,
``course-check-release``, ``course-student-edition``, or
``python -m course_grading COMMAND``. ``instructors.md`` and
``publishing.md`` describe the workflow.
"""
