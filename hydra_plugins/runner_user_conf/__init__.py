"""A user's `./conf` on the runner's config search path (runner)."""
