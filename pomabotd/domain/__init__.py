"""The pure core: beliefs, the trade gate, selection, sizing and paper positions.

Nothing here reads the clock, touches files or the network, logs, or keeps global state: every
function takes values (time as `as_of`) and returns values, so results are reproducible and the
same code runs in the parent and in the workers.
"""
