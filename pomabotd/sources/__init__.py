"""Adapters for the outside systems that feed a cycle: files, synthetic data, live APIs.

Each one hands the rest of the package validated domain values (or JSON lines that decode into
them); a bad record becomes a `Rejected` value naming its line and field, never an exception.
"""
