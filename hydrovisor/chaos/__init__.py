"""Fault injection: real failures (loop stalls, deadlocks) on demand, to prove the system copes with them."""
