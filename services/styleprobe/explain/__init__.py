"""The explanation engine, written once against the model-backend and artifact-store seams.

Library API: ``Explainer(backend, store).explain(image, target, lambdas, options)`` in
:mod:`styleprobe.explain.engine` returns an :class:`~styleprobe.explain.result.ExplanationResult`;
the same module's stage functions pass store keys, so workers can run them one by one.
"""
