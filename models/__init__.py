"""Model catalog data: one TOML file per family (see mathsolve/catalog.py)."""
