"""Strategy plugins that misbehave on purpose, for the runtime's fault tests."""
