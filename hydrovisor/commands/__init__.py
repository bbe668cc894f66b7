"""The command lifecycle: waiters for status changes, publishing, the tracker actor's plumbing."""
