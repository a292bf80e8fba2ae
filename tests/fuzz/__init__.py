"""Fuzzing the data plane and the control socket (issue 12).

One input format serves hypothesis (``tests/unit/test_fuzz.py``), atheris
(``python -m tests.fuzz TARGET --runs N | --seconds S``) and the regression
corpus (``tests/data/fuzz/<target>/``): a byte string that ``program.run``
decodes into a sequence of frames, mutated from a valid conversation of the
target's protocol, with time jumps and random frames between them.  Every
byte string is a valid program, and the empty one plays the conversation
unmodified.
"""
