"""Plans out: export and reading of a plan directory, the invariant checker, explain and diff."""
