"""``styleprobe attributes``: the attributes a classifier reacts to, each shown on its own.

An explanation (as ``styleprobe explain``) plus attribute discovery in the generator's
StyleSpace (:mod:`styleprobe.explain.attributes`): the top channels, ranked once per model
set and settings and stored, each traversed on the image with its flip λ and effect, one
strip per attribute in the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from styleprobe.cli.common import (
    UserError,
    add_common_args,
    job_spec_from_args,
    settings_from_args,
    user_errors,
)
from styleprobe.explain.spec import AttributeSettings
from styleprobe.storage.local import LocalStore

if TYPE_CHECKING:
    from styleprobe.explain.result import ExplanationResult
    from styleprobe.explain.spec import JobSpec
    from styleprobe.modelset import ModelSet


def register(sub: argparse._SubParsersAction) -> None:
    defaults = AttributeSettings()
    p = sub.add_parser("attributes", help="find the StyleSpace attributes the classifier "
                                          "reacts to and traverse each on an image")
    p.add_argument("image", help="PNG, JPEG, TIFF, DICOM or .npy file")
    p.add_argument("--model-set", default="knee-oa")
    p.add_argument("--top", type=int, default=defaults.top,
                   help=f"attributes to find (default {defaults.top}, at most "
                        f"{AttributeSettings.MAX_TOP})")
    p.add_argument("--attribute-samples", type=int, default=defaults.samples,
                   help="generated images the channels are ranked over (default "
                        f"{defaults.samples}; each costs 2 decodes per candidate channel)")
    p.add_argument("--shift", type=float, default=defaults.shift,
                   help="how far each channel is moved while ranking, in its standard "
                        f"deviations (default {defaults.shift:g})")
    p.add_argument("--attribute-seed", type=int, default=defaults.seed)
    add_common_args(p)
    p.set_defaults(func=_attributes)


def _attributes(args: argparse.Namespace) -> None:
    from styleprobe.backends import open_backend
    from styleprobe.cli.explain import _print_summary, _progress_bar, _remove_if_left_empty
    from styleprobe.explain.engine import Explainer
    from styleprobe.explain.spec import JobSpecError

    image = Path(args.image)
    if not image.is_file():
        raise UserError(f"{image} does not exist or is not a file")
    settings = settings_from_args(args)
    out = Path(args.out or settings.store_dir)
    with user_errors():
        try:
            wanted = AttributeSettings(args.top, args.attribute_samples, args.shift,
                                       args.attribute_seed)
        except JobSpecError as exc:
            raise UserError(str(exc)) from exc
        backend = open_backend(settings, args.model_set)
        try:
            spec = spec_with_attributes(job_spec_from_args(args, backend.model_set, settings),
                                        backend.model_set, wanted)
            with _progress_bar() as progress, _remove_if_left_empty(out):
                result = Explainer(backend, LocalStore(out), progress).explain(
                    image, spec, filename=image.name)
        finally:
            backend.close()
    _print_summary(result, LocalStore(out))
    for line in attribute_lines(result):
        print(line)


def spec_with_attributes(spec: JobSpec, model_set: ModelSet,
                         settings: AttributeSettings) -> JobSpec:
    """``spec`` asking for attributes, checked against ``model_set`` (JobSpecError)."""
    from styleprobe.explain.spec import JobSpec

    return JobSpec.create(model_set, spec.target, spec.lambdas, spec.probe, spec.search,
                          spec.orthogonalize, attributes=settings)


def attribute_lines(result: ExplanationResult) -> list[str]:
    """One line per attribute: rank, channel, effect on this image, flip λ."""
    lines = [f"attributes of P({result.target}) (StyleSpace channels, λ in units of each "
             "channel's spread; +λ raises the target):"]
    for a in result.attributes:
        flip = f"flips at λ = {a.flip_lambda:+.2f}" if a.flip_lambda is not None else "no flip"
        lines.append(f"  {a.rank}. {a.name}: P({result.target}) {a.probabilities[0]:.3f} -> "
                     f"{a.probabilities[-1]:.3f} (effect {a.effect:+.3f}), {flip}; ranking "
                     f"effect {a.ranking_effect:.2f} log-odds, flipped "
                     f"{a.ranking_flip_share:.0%} of samples")
    return lines
