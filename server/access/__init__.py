"""Access: who is calling (keys: shape, checksum, keyed digest) and what they may do (limits: models,
rates, concurrency, budgets reserved before a request runs)."""
