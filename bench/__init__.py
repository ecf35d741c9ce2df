"""Throughput and overhead measurements of the appliance, run by ``make bench``.

Every system under test runs as its own process (so its CPU time can be read from ``/proc``); the load
generator is another process; systems are measured interleaved, round after round, and the medians of
the rounds are reported with the machine they ran on. ``python -m bench --help`` lists the options.
"""
