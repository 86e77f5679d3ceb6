"""Model cards: a Markdown page per model set with its data, configuration and numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from styleprobe.modelset import ModelSet

BUNDLED = ("knee-oa", "histology-tumour")  # the sets scripts/build_model_sets.sh makes
RUN_PARTS = ("generator", "encoder", "classifier")  # in the order they are trained

TARGETS = {
    "classifier_test_auc": (">=", 0.95),
    "encoder_agreement": (">=", 0.90),
    "identity_top1": (">=", 0.90),
    "realism_accuracy": ("<=", 0.80),
}
PAPER = {
    "classifier_test_auc": "0.89 (knee KL) / 0.92 (histology)",
    "realism_accuracy": "0.58 (radiologists, knees)",
}
LABELS = {
    "classifier_test_auc": "Classifier test AUC",
    "classifier_test_accuracy": "Classifier test accuracy",
    "classifier_auc_on_reconstructions": "Classifier AUC on reconstructions G(E(x))",
    "encoder_agreement": "Encoder agreement: f(x) and f(G(E(x))) on the same side",
    "encoder_pixel_mse": "Encoder pixel MSE of G(E(x)) (images in [0, 1])",
    "encoder_pixel_mse_p95": "Encoder pixel MSE, 95th percentile",
    "identity_top1": "Inversion identity: top-1 retrieval of x from G(E(x)) among 100 "
                     "held-out images (chance 0.01)",
    "identity_spread_ratio": "Inversion spread: pairwise distance of reconstructions over "
                             "that of their inputs",
    "realism_accuracy": "Realism: real-vs-generated classifier accuracy (0.5 is perfect)",
    "generator_precision": "Generator precision (k-NN manifolds, oracle features)",
    "generator_recall": "Generator recall (k-NN manifolds, oracle features)",
    "quality_gate_max_pixel_mse": "Quality gate: max pixel MSE before 'unreliable'",
    "test_images": "Held-out real images measured",
    "classifier_auc": "Classifier AUC on the held-out images (default target)",
    "agreement_on_reconstructions": "Classifier agreement on reconstructions G(E(x))",
    "quality_gate_flagged_share": "Share of held-out images the quality gate flags",
    "held_out_images": "Held-out images measured",
}


def _verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound} — {'met' if ok else 'MISSED'}"


def _reproduce(model_set: ModelSet) -> str:
    """How to make this set again: the recorded commands of its runs and its export."""
    t = model_set.training
    if "base_model_set" in t:
        return (f"Reproduce: `styleprobe model-set add-classifier {t['classifier_file']} --base "
                f"{t['base_model_set']} --name {model_set.name} --class-names "
                f"{','.join(model_set.classifier.class_names)} --target "
                f"{model_set.default_target}`.")
    commands = [t[part]["run"]["command"] for part in RUN_PARTS
                if "command" in t.get(part, {}).get("run", {})]
    missing = [part for part in RUN_PARTS if "run" not in t.get(part, {})]
    recorded = (t.get("record") or {}).get("reproduce")
    if missing and recorded:  # trained before run records: the record says how
        text = f"Reproduce: {recorded}.\n"
        if model_set.name in BUNDLED:
            text += ("\n`make models` (scripts/build_model_sets.sh) retrains and re-exports "
                     "both bundled\nsets and rewrites this card.\n")
        return text
    text = ("Reproduce: the recorded commands of the training runs and the export, in order "
            "(a run resumes from its checkpoint when run again):\n\n```sh\n"
            + "\n".join([*commands, t.get("export_command", "styleprobe export ...")])
            + "\n```\n")
    if missing:
        text += (f"\nNo run record (run.json beside the checkpoint) for: {', '.join(missing)}; "
                 "their commands are not known.\n")
    if model_set.name in BUNDLED:
        text += ("\n`make models` (scripts/build_model_sets.sh) retrains and re-exports both "
                 "bundled\nsets and rewrites this card.\n")
    return text


def _runs(t: dict[str, Any]) -> str:
    """A table of the training runs: data, steps, times, status, final metrics."""
    rows = []
    for part in RUN_PARTS:
        run = t.get(part, {}).get("run")
        if run is None:
            continue
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in run.get("metrics", {}).items())
        rows.append(f"| {part} | {run.get('step')} | {run.get('sessions')} | "
                    f"{run.get('started_at')} | {run.get('ended_at')} | {run.get('status')} | "
                    f"{metrics} |")
    if not rows:
        return ""
    return ("| run | steps | sessions | started | ended | status | final metrics |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n")


def _data(t: dict[str, Any]) -> str:
    """One sentence on the training and held-out data."""
    fingerprint = t.get("data_fingerprint") or {}
    facts = ", ".join(f"{k} {v}" for k, v in fingerprint.items() if k != "folder")
    held = t.get("held_out", {})
    text = f"Trained on `{t.get('data')}`" + (f" ({facts})" if facts else "") + "."
    if held:
        text += f" Measured on held-out `{held.get('data')}` ({held.get('images')} images)."
    return text + "\n\n"


def _trained(t: dict[str, Any]) -> str:
    """How, where and how long each network was trained, from the training record."""
    record = t.get("record")
    if not isinstance(record, dict):
        return ""
    rows = []
    for part in ("gan", "classifier", "encoder"):
        run = record.get(part)
        if not isinstance(run, dict):
            continue
        steps = run.get("iterations", run.get("epochs"))
        unit = "iterations" if "iterations" in run else "epochs"
        command = f"`{run['command']}`" if "command" in run else "—"
        rows.append(f"| {part} | {steps} {unit} | {run.get('batch', '—')} | "
                    f"{run.get('minutes', '—')} | {command} |")
        tune = run.get("fine_tune")
        if isinstance(tune, dict):
            rows.append(f"| {part}, fine-tuned ({tune.get('machine', '')}) | "
                        f"{tune.get('steps')} iterations | — | {tune.get('minutes', '—')} | "
                        f"`{tune.get('command', '—')}` |")
    note = f"Recipe: {record['recipe_note']}.\n\n" if "recipe_note" in record else ""
    return (f"Where: {record.get('machine', 'not recorded')}.\n\n" + note +
            "| network | how long | batch | minutes | how (command) |\n"
            "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n")


def _factor_coverage(m: dict[str, Any]) -> str:
    """The generator's coverage of every oracle factor, when measured."""
    factors = m.get("factor_coverage")
    if not factors:
        return ""
    rows = [f"| {name} | {f['coverage']:.3f} | {f['real']} | {f['generated']} |"
            for name, f in factors.items()]
    return (f"""

## Generator coverage of the oracle factors

{m.get("coverage_samples")} generated samples against as many held-out real images, both read
by the evaluation's oracle; coverage is the overlap of the two histograms (1: drawn as often,
at every level, as the real images show it; see `styleprobe.evaluation.coverage`).

| factor | coverage | real | generated |
| --- | --- | --- | --- |
""" + "\n".join(rows))


def write_model_card(model_set: ModelSet, out_dir: Path, samples_png: str) -> Path:
    """Write ``<out_dir>/<name>.md`` from the manifest's training record and metrics."""
    m, t = model_set.metrics, model_set.training
    rows = []
    for key, label in LABELS.items():
        if key in m:
            value = m[key]
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            rows.append(f"| {label} | {shown} | {_verdict(key, value)} | {PAPER.get(key, '')} |")
    coverage = m.get("generator_coverage", {})
    data_shares = m.get("data_class_shares", {})
    coverage_rows = [f"| {name} | {share:.3f} | "
                     + (f"{data_shares[name]:.3f} |" if name in data_shares else "— |")
                     for name, share in coverage.items()]
    findings = "\n".join(f"- **Finding:** {f}" for f in m.get("findings", []))
    r2 = m.get("nuisance_direction_r2", {})
    nuisance_rows = [f"| {k} | {v:.3f} |" for k, v in sorted(r2.items())]
    p = model_set.preprocessing
    text = f"""# Model card: `{model_set.name}`

{model_set.description}

![Generated samples (EMA generator, truncation 1.0)]({samples_png})

## Models

| part | Triton name | version | sha256 |
| --- | --- | --- | --- |
""" + "\n".join(
        f"| {kind} | `{e.triton_name}` | {e.version} | `{e.sha256[:16]}…` |"
        for kind, e in model_set.models.items()
    ) + f"""

Input: {p.channels} channel(s), {p.resolution}×{p.resolution}, values in {p.value_range}.
Classes: {", ".join(model_set.classifier.class_names)}; default target
`{model_set.default_target}`; threshold {model_set.classifier.threshold}.
Latent space: z {model_set.z_dim}-d, w {model_set.w_dim}-d.

## Data and training

""" + _data(t) + _trained(t) + _runs(t) + f"""```json
{json.dumps(t, indent=2)}
```

## Measured numbers

| measure | value | target | paper |
| --- | --- | --- | --- |
""" + "\n".join(rows) + _factor_coverage(m) + (f"""

## Generator coverage of the classes

Share of {m.get("generator_coverage_samples")} generated samples the classifier calls each
class, against its share of the held-out data: a class the generator rarely draws cannot be
shown by any explanation.

| class | generated share | data share |
| --- | --- | --- |
""" + "\n".join(coverage_rows) + "\n\n" + findings if coverage else "") + """

## Nuisance directions (for confounder orthogonalisation)

Each is the unit ridge-regression direction in W of one labelled nuisance factor, fitted on
encoded held-out real images; R² on a held-out fifth says how linearly W encodes it.

| factor | R² |
| --- | --- |
""" + "\n".join(nuisance_rows) + "\n\n" + _reproduce(model_set) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model_set.name}.md"
    path.write_text(text)
    return path
