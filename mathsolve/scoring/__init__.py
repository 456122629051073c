"""Scoring: how answers are read, judged, voted on and re-graded.

To change how answers are judged (when a prediction counts as the reference), change
``equivalence.py``; its last step, symbolic equality with sympy, is ``sympy_worker.py``.
To change how an answer is read out of a solution text, change ``answer.py``.

- ``answer.py``: answer extraction (the ``tora``, ``boxed`` and ``dart`` styles a
  protocol's ``answer_style`` names) and ``strip_string``, the normalisation both sides get;
- ``equivalence.py``: the equivalence rules (text, numbers, tuples, sets, matrices), in order;
- ``grader.py``: ``Grader``, which applies the rules and runs the symbolic step in a worker
  process under a time limit; ``math_equal`` for one-off comparisons;
- ``sympy_worker.py``: that worker, started as ``python -I sympy_worker.py`` (it imports
  nothing from mathsolve), where sympy parses and compares untrusted answers;
- ``mathverify_grader.py`` and ``mathverify_worker.py``: the modern grader, Hugging Face's
  math-verify, in a worker process of its own (its alarms need a main thread);
- ``worker_process.py``: the JSON-lines worker process both graders start and kill;
- ``graders.py``: which grader judges (``--grader reference|math-verify|auto``);
- ``ground_truth.py``: the reference answer of each evaluation data set's records;
- ``vote.py``: self-consistency, the majority vote over equivalent answers;
- ``records.py``: the one reader of saved-solution files (mathsolve records, released ToRA
  outputs, the ToRA corpus, answer pairs), shared by re-grading and ``mathsolve replay``;
- ``regrade.py``: re-grading a whole file (``mathsolve grade``).

Nothing here prints or imports rich: the command line (mathsolve.cli) shows the results.
"""
