"""The user's files, handled safely: bytes decoded to text by fixed rules, JSON parsed with
bounds, and output files written only when mathsolve may (its own, locked, never an input)."""
