"""Open-file descriptors: as many as the system lets the daemon have, and most kept for cycles.

systemd starts services with a soft limit of 1,024 open files (the hard limit is far higher);
a cycle needs descriptors for its workers, its inputs, the ledger and its fetches. At start
the daemon raises its soft limit to the hard limit (at most `CEILING`), which its workers
inherit, and the shipped unit sets `LimitNOFILE=` as well. Where raising is refused (a
container, a system-call filter) the limit stays as it was, and the start line says which.

Whatever the limit, the status endpoint may hold at most a quarter of it
(`status_budget`): the other three quarters stay for the cycles.
"""

from __future__ import annotations

import resource
from typing import Final

__all__ = ["CEILING", "STATUS_SHARE", "open_file_limit", "raise_open_file_limit", "status_budget"]

#: The highest soft limit the daemon asks for: more than any cycle uses, and low enough that
#: code iterating over every possible descriptor stays cheap.
CEILING: Final = 65_536
#: The part of the open-file limit the status endpoint's connections may take.
STATUS_SHARE: Final = 4


def open_file_limit() -> int:
    """The soft limit on open files now."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit (at most `CEILING`) if it is
    lower; returns the soft limit in force afterwards. A refusal (a system-call filter, a
    container) leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        return soft
    return target


def status_budget(configured: int, limit: int | None = None) -> int:
    """The connections the status endpoint may hold: `configured`
    (`daemon.status_max_connections`), and at most a quarter of the open-file `limit` (the
    current soft limit when not given), at least one."""
    soft = open_file_limit() if limit is None else limit
    return max(1, min(configured, soft // STATUS_SHARE))
