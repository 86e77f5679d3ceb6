"""The explanation engine, written once against the model-backend and artifact-store seams.

Library API: ``Explainer(backend, store).explain(image, spec)`` in
:mod:`styleprobe.explain.engine` returns an :class:`~styleprobe.explain.result.ExplanationResult`;
``spec`` is a :class:`~styleprobe.explain.spec.JobSpec` (what to explain, and how). The
same module's stage list, :data:`~styleprobe.explain.engine.STAGES`, passes store keys, so
workers run the stages one by one.
"""
