"""One module per command. Each imports only click at module level and what it runs on inside
its function, so that listing the commands (`pomabotd --help`) stays cheap."""
