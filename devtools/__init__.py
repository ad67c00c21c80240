"""Development helpers: start a private Redis, the simulator, the API and workers as processes.

Used by ``make run`` / ``make demo`` (:mod:`devtools.run`), the tests' fixtures and the benchmark.
Not part of the installed gateway.
"""
