"""Running a cycle: evaluating markets (in-process or in a worker pool), then selection and output."""
