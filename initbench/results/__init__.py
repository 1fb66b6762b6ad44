"""The results format and its store: schema, atomic writes, loading."""
