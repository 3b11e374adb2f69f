"""The long-running daemon: the cycle loop, signals, reload, sd_notify and the status endpoint.

It sits above everything else in the package; nothing below imports it.
"""
