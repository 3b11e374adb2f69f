"""A strategy plugin whose import never finishes in time, as one reading a file on a network
file system that stopped answering would: for the reload tests."""

import time

time.sleep(60)


def evaluate(*args: object, **kwargs: object) -> None:  # pragma: no cover - never imported
    """Never reached."""
