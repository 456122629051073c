"""The data path from a question to a record: the model a reference names, the tool loop,
problems read from files, batches and evaluations, and what produced each record."""
