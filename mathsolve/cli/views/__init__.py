"""What the commands show: tables, progress and summaries on the terminal. Views format and
draw; the work they show is done in the core."""
