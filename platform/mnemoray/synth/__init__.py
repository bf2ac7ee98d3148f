"""Dataset synthesis domain logic (RoleMemo-style): personas, stages, checks, assembly, store, export."""
