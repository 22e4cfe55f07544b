"""The ``llmfti`` command line: the composition root.

This is the one part of the ``llmfti`` package allowed to import the CLI framework and the
``pipelines``/``agents``/``evals`` programs, always lazily inside a command, so ``llmfti --help``
stays instant. Nothing else in ``llmfti`` imports ``llmfti.cli``.
"""
