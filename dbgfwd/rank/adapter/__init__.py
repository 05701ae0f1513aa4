"""debugpy's debug adapter, run with dbgfwd's guard against a debugpy bug (see __main__.py).

`dbgfwd.rank.debuggee.listen()` makes `debugpy.listen()` start the adapter from this directory instead of
debugpy's own: `python <this directory> <debugpy's adapter arguments>`. Nothing here is imported by the rank.
"""
