"""nbgrader configuration for the course's labs.

Instructor sources (solutions and hidden tests) live in solutions/<lab>/<lab>.ipynb;
`make labs` writes the student versions to labs/<lab>/<lab>.ipynb.
"""

c = get_config()  # noqa: F821 - provided by nbgrader

c.CourseDirectory.course_id = "genai-llm"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# Only the notebook goes to students: nothing else in solutions/<lab>/ is copied.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.md", "*.py", "*.json", "*.csv"]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Per-cell time limit when grading (the slowest solution cell takes well under a minute).
c.ExecutePreprocessor.timeout = 300
