"""Pure logic: run state and reducers, merges, gates, plans and pricing. Deterministic (time is
passed in), no I/O; workflows and clients both use it."""
