"""Running a cycle: evaluating markets in-process or in a worker pool, selection, output."""
