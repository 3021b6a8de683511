"""``make bench``: breakerd against the Python circuit-breaker peers, on this machine, now.

Run ``python -m tests.bench`` (``--quick`` for a spot check under a minute).  The parent process
starts one worker process per scenario group (``scenarios.GROUPS``), so that no group inherits
another's heap, threads or event loop; each worker measures its scenarios in interleaved rounds
and hands back rows; the parent prints one markdown table and writes the JSON file named by
``$BENCH_JSON`` (default ``bench-results.json``).

Modules: ``harness`` (rounds, collector settling, medians and per-round ratios, bars),
``loops`` (the timed loops, identical for every contestant), ``peers`` (one adapter per library,
breakerd included), ``scenarios`` (the issue's table, row by row), ``telemetry_hook`` (row
1t's switch), ``report`` (table and JSON).
No file here is named ``test_*``: pytest never collects the benchmark, and the test suite times
nothing.
"""
