"""The ways the built-in evaluator runs: `columnar` (numpy, a chunk at a time) beside the
scalar reference, `pomabotd.evaluate_market`, which the worker calls market by market."""
