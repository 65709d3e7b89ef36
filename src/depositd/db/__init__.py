"""Storage: the only schema, repositories, the unit of work and migrations."""
