"""Use cases: one async function each, every one inside one unit of work."""
