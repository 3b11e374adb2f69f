"""Replay: evaluate markets that already resolved as they stood D days before closing, and
score the decisions (Brier score, range coverage, calibration, hit rate, P&L).

`source` reads resolved markets, `timeline` shows each one to the engine as of its evaluation
time with its outcome hidden, `run` evaluates, selects, settles and scores.
"""
