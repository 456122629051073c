"""The data path from a question to a record: the model a reference names, the tool loop,
problems read from files, batches and evaluations, votes over K samples and how many
sessions run at once, and what produced each record."""
