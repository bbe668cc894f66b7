"""The command lifecycle: publishing, the tracker actor's plumbing, the reply path, waiters for status changes."""
