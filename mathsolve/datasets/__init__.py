"""Evaluation sets shipped with mathsolve (see README.md in this folder for sources
and licences). `mathsolve eval gsm8k` and `mathsolve eval math500` read them."""
