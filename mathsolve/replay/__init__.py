"""Replaying saved solutions: re-run every recorded code block, compare the observations.

A released output file records, after each code block, the text its executor returned.
Running the same programs here through the protocol's executor and formatter and getting
the same text back is how a user checks that the installation reproduces the reference
environment (see docs/fidelity.md, "Replay").

The records are read by mathsolve.scoring.records (released ToRA outputs, the ToRA corpus,
mathsolve's own records). For released and corpus files the program of an output block is
what the ToRA loop would have run at that point: the last python block of the text before
it. Its recorded text is compared with ``ToraProtocol.result_text`` of a configured copy
of the protocol; the first public release formatted results differently from the current
code (see compare.RELEASES).

- ``core.py``: ``replay_file``, reading, running and comparing one file;
- ``runner.py``: running the blocks in parallel sandboxed tools;
- ``compare.py``: the release formats, our text for a block, why two texts differ;
- ``summary.py``: the summary and mismatches it returns, the --mismatches file, --min-rate.

The core reports progress through plain callbacks and returns data; the command line
draws them (mathsolve.cli.views.replay).
"""
