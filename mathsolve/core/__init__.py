"""The data path from a question to a record: the tool loop, problems read from files,
batches and evaluations, and what produced each record."""
