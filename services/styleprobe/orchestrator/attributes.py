"""FindAttributes: an Explain job that also finds the classifier's StyleSpace attributes.

The request is Explain's plus :class:`AttributeOptions`; the options are checked first
(INVALID_ARGUMENT naming the field), then the job's spec gets them (a model set without
StyleSpace: FAILED_PRECONDITION), and the job runs the engine's stages like any explain
job (the ``attributes`` stage does the work). Its explanation's ``attributes`` come from
the manifest (:func:`attribute_messages`).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from styleprobe.api import pb
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import AttributeSettings, JobSpec, JobSpecError
from styleprobe.orchestrator.requests import RequestError, invalid, model_set_named

FIELDS = {"top": "top", "attribute_samples": "samples", "shift": "shift",
          "attribute_seed": "seed"}  # AttributeSettings' error setting -> request field


def attribute_settings(options: pb.AttributeOptions) -> AttributeSettings:
    """The request's attribute settings (unset fields: defaults); INVALID_ARGUMENT naming
    the field ``attributes.<field>`` at fault."""
    defaults = AttributeSettings()
    try:
        return AttributeSettings(top=options.top or defaults.top,
                                 samples=options.samples or defaults.samples,
                                 shift=options.shift or defaults.shift, seed=options.seed)
    except JobSpecError as exc:
        raise invalid(f"attributes.{FIELDS.get(exc.setting, exc.setting)}: {exc}") from exc


def with_attributes(spec: JobSpec, repository: Path,
                    settings: AttributeSettings) -> JobSpec:
    """``spec`` asking for attributes; FAILED_PRECONDITION for a model set that exports no
    StyleSpace."""
    model_set = model_set_named(repository, spec.model_set)
    try:
        return JobSpec.create(model_set, spec.target, spec.lambdas, spec.probe, spec.search,
                              spec.orthogonalize, attributes=settings)
    except JobSpecError as exc:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc


def attribute_messages(result: ExplanationResult) -> list[pb.Attribute]:
    """The explanation's attributes as messages, each naming its strip artifact."""
    return [pb.Attribute(
        rank=a.rank, name=a.name, channel=a.channel, sign=a.sign, sigma=a.sigma,
        ranking_effect=a.ranking_effect, ranking_flip_share=a.ranking_flip_share,
        lambdas=a.lambdas, probabilities=a.probabilities, flips=a.flip_lambda is not None,
        flip_lambda=a.flip_lambda or 0.0, effect=a.effect,
        strip_artifact=f"attribute_{a.rank:02d}")
        for a in result.attributes]
