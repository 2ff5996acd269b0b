"""The seeded chaos run of ``tests/test_chaos.py``: its plan, the faulty provider, the bot's lives, the verdict.

- ``plan``: everything random in a run, drawn from one ``random.Random(seed)`` (jobs, faults, kills, locks).
- ``flux``: the Flux emulator with the plan's faults applied by a middleware of our own.
- ``life``: the ``fluxbot`` process, killed and restarted; another SQLite connection holding the write lock.
- ``verdict``: what happened (database, Discord, provider), the invariants, and the figures.
"""
