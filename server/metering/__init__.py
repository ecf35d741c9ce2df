"""Metering: the ledger (one row per request, exact tokens and cost), the requests in flight
checkpointed against a crash, and the reports the window's graphs and exports read."""
