"""The evaluation report: ``report.json`` (every number), ``report.md`` and ``report.html``
(the same content, with plots), ``figures/*.png``; and the results table of ``docs/``.

The page is built once as a list of blocks (headings, paragraphs, tables, figures) and
written out twice, as Markdown and as self-contained HTML (figures inlined).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from styleprobe.evaluation.attributes import attribute_blocks
from styleprobe.evaluation.evaluate import Evaluation
from styleprobe.templates import render_template

Block = tuple[str, Any]  # ("h1" | "h2" | "p", text) | ("table", (header, rows)) | ("figure", ...)
GRADCAM_NOTE = (
    "Grad-CAM is captum's `LayerGradCam` on the last convolution of the eager classifier "
    "(rebuilt from the TorchScript file's weights), upsampled bilinearly; captum needs no "
    "torchvision.")
HINTS = {  # what would fix a missed target
    "attribute_purity": "a StyleSpace channel moves what the generator ties together: train "
    "the generator longer (its channels disentangle as it learns) or rank over more samples "
    "(`--attribute-samples`); compare with the direction's purity beside it.",
    "attribute_separation": "the factor is not among the channels the classifier reacts to "
    "most, or the generator does not draw it (the marker): raise --top, or train the "
    "generator on more images that show it.",
    "conditional_nuisance": "the readers' nuisance directions do not span what the generator "
    "ties to disease (check the readers' R² and the cosines in the report): a generator "
    "whose factors are less entangled, or more readable nuisance factors, are needed.",
    "latent_auc_gap": "the direction is probed on generated images, so real encodings that "
    "fall off the generator's distribution score worse: a more realistic GAN (realism "
    "accuracy nearer 0.5), an encoder trained with real images in its loss, and more probe "
    "samples narrow the gap.",
    "flip_rate": "widen the λ range (`--lambdas`), or train the generator longer so that "
    "the classes separate along one latent direction.",
    "main_spearman": "the traversal changes the prediction by other means than the disease "
    "factors, or the generator cannot yet draw them: train the GAN longer (osteophytes and "
    "markers come late) and check the oracle's R² for the disease score.",
    "nuisance_spearman": "Spearman is scale-free, so a small but steady drift counts as much "
    "as a large one (compare the changes in std units above); remove that factor's direction "
    "(`--orthogonalize`; export a nuisance direction for it if the model set has none), train "
    "the generator longer so that the factors disentangle, or find the direction by "
    "conditional manipulation against the oracle's readings of generated samples.",
    "localization": "the difference map is taken against the reconstruction G(E(x)), so "
    "encoder error shifts it off the real image's mask: a better encoder (or optimisation "
    "refinement of the encoding) sharpens it.",
    "realism": "train the GAN longer and with ADA on small sets (`styleprobe train gan` turns "
    "it on below its size threshold), at the bundled sets' resolution or higher; the "
    "coverage rows show which factor it draws least like the real images.",
    "identity_top1": "the encoder maps different inputs onto similar images (see the spread "
    "ratio): refine each encoding with a few steps of latent optimisation, use per-layer "
    "codes (W+) with a prior, or weight the pixel loss on real images more.",
    "marker_coverage": "the generator under-draws the marker: train longer (rare features "
    "come late) with ADA, or on more marked images.",
    "shortcut": "a direction can only move what the generator draws: the bundled GANs draw "
    "the marker on few or none of their samples (the table's last row), although 30% of "
    "their training images carry it, so the shortcut classifier's direction falls back on "
    "the disease. Train the GAN much longer (both were trained 4.5 GPU-minutes) or on more "
    "marked images; if the shortcut classifier's AUC barely drops with the marker "
    "reversed, it learned the disease instead: train it on harder cases.",
}


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: fixed digits; '—' for None or NaN; yes/no for booleans."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**MISSED**", None: "not measured"}[met]


# --- figures ---------------------------------------------------------------------------------

def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def probability_figure(validity: dict[str, Any], target: str, threshold: float) -> bytes:
    """The prediction along λ: median and quartiles, per starting class and direction."""
    fig = Figure(figsize=(7, 3.4), dpi=100)
    for col, (name, record) in enumerate(validity.items()):
        ax = fig.add_subplot(1, len(validity), col + 1)
        curves = record["probability_curves"]
        for side, colour in (("positive", "tab:red"), ("negative", "tab:blue")):
            if f"{side}_median" in curves:
                ax.plot(curves["lambdas"], curves[f"{side}_median"], color=colour,
                        label=f"G(E(x)) predicted {side}")
                ax.fill_between(curves["lambdas"], curves[f"{side}_q25"], curves[f"{side}_q75"],
                                color=colour, alpha=0.2)
        ax.axhline(threshold, color="grey", linestyle="--")
        ax.set(title=f"{name} direction", xlabel="λ", ylabel=f"P({target})", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def flip_figure(validity: dict[str, Any]) -> bytes:
    """Histogram of |flip λ| per direction."""
    fig = Figure(figsize=(6, 3), dpi=100)
    ax = fig.add_subplot()
    for name, record in validity.items():
        values = [abs(v) for v in record["flip_lambdas"] if not math.isnan(v)]
        if values:
            ax.hist(values, bins=20, alpha=0.5, label=f"{name} ({record['flip_rate']:.0%} flip)")
    ax.set(xlabel="|λ| of the counterfactual", ylabel="images")
    ax.legend(fontsize=8)
    return _png(fig)


def faithfulness_figure(faith: dict[str, Any]) -> bytes:
    """Median Spearman(λ, factor) per factor, plain and orthogonalized."""
    factors = [*faith["disease_factors"], *faith["nuisance_factors"]]
    kinds = [k for k in ("plain", "orthogonalized") if k in faith]
    fig = Figure(figsize=(7, 0.3 * len(factors) + 1.2), dpi=100)
    ax = fig.add_subplot()
    ys = np.arange(len(factors))
    height = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [faith[kind]["factors"][f]["spearman_median"] for f in factors]
        ax.barh(ys + i * height, values, height=height, label=kind)
    ax.set_yticks(ys + 0.4 - height / 2, factors, fontsize=8)
    ax.invert_yaxis()
    for x in (-0.3, 0.3):
        ax.axvline(x, color="grey", linestyle=":")
    for x in (-0.8, 0.8):
        ax.axvline(x, color="grey", linestyle="--")
    ax.set(xlim=(-1.05, 1.05), xlabel="median Spearman(λ, oracle reading)")
    ax.legend(fontsize=8)
    return _png(fig)


def panel_figure(columns: dict[str, np.ndarray], title: str) -> bytes:
    """A grid of examples: one column per named array of (K, R, R[, C]) images or maps."""
    names = list(columns)
    rows = min(len(a) for a in columns.values())
    fig = Figure(figsize=(1.5 * len(names), 1.5 * max(rows, 1) + 0.5), dpi=100)
    fig.suptitle(title, fontsize=9)
    for r in range(rows):
        for c, name in enumerate(names):
            ax = fig.add_subplot(max(rows, 1), len(names), r * len(names) + c + 1)
            image = np.asarray(columns[name][r])
            if image.ndim == 3 and image.shape[2] == 3:
                ax.imshow(np.clip(image, 0, 1))
            else:
                image = image[..., 0] if image.ndim == 3 else image
                colour = name not in ("input", "reconstruction", "counterfactual")
                ax.imshow(image, cmap="inferno" if colour else "gray",
                          vmin=None if colour else 0, vmax=None if colour else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name.replace("_", " "), fontsize=7)
    return _png(fig)


def motion_figure(bias: dict[str, Any]) -> bytes:
    """Mean |change| (std units) of the marker and the disease factors over the traversal,
    along the shortcut classifier's direction and the bundled classifier's."""
    names = list(bias["shortcut_direction"])
    fig = Figure(figsize=(6.5, 3), dpi=100)
    ax = fig.add_subplot()
    xs = np.arange(len(names))
    for i, kind in enumerate(("shortcut_direction", "bundled_direction")):
        ax.bar(xs + 0.4 * i, [bias[kind][n]["abs_change_mean"] for n in names], width=0.4,
               label=kind.replace("_", " "))
    ax.set_xticks(xs + 0.2, names, fontsize=7, rotation=20)
    ax.set(ylabel="mean |change| over λ range (std)")
    ax.legend(fontsize=8)
    return _png(fig)


def figures(evaluation: Evaluation) -> dict[str, bytes]:
    """Every figure of the report as PNG bytes, by file name."""
    r = evaluation.results
    out = {
        "probability.png": probability_figure(r["validity"], r["target"], r["threshold"]),
        "flip_lambdas.png": flip_figure(r["validity"]),
        "faithfulness.png": faithfulness_figure(r["faithfulness"]),
    }
    if r["bias"]["direction"] is not None:
        out["bias_motion.png"] = motion_figure(r["bias"])
    for name, columns in evaluation.examples.items():
        if columns and min(len(a) for a in columns.values()) > 0:
            out[f"{name}.png"] = panel_figure(columns, f"{name}: {r['model_set']}")
    return out


# --- the page --------------------------------------------------------------------------------

def blocks(r: dict[str, Any], figure_names: Sequence[str]) -> list[Block]:
    """The report's content."""
    s, table, inv = r["settings"], r["table"], r["inversion"]
    paper = r["paper"]
    faith, local, bias = r["faithfulness"], r["localization"], r["bias"]
    out: list[Block] = [
        ("h1", f"StyleProbe evaluation: {r['model_set']} on {r['phantoms']} phantoms"),
        ("p", f"{s['n']} held-out phantoms (seed {s['test_seed']}, {s['positives']} "
              f"{r['target']}); λ grid {s['lambdas']}; direction probed on "
              f"{s['probe']['samples']} sampled latents; orthogonalized direction: "
              f"{', '.join(s['orthogonalized_against']) or 'none'} removed."),
        ("h2", "Targets"),
        ("table", (["Target", "Measured", "Goal", "Verdict"],
                   [[t["name"], fmt(t["measured"]), t["target"], verdict(t["met"])]
                    for t in r["targets"]])),
        ("h2", "1. The paper's table"),
        ("table", (["Measure", "StyleProbe", "Paper"], [
            ["Classifier test AUC", fmt(table["classifier_auc"]),
             fmt(paper.get("classifier_auc"))],
            ["Latent-predictor AUC, held-out sampled latents",
             fmt(table["latent_auc_sampled"]), fmt(paper.get("latent_auc"))],
            ["Latent-predictor AUC, real test images through the encoder (true labels)",
             fmt(table["latent_auc_real"]), "—"],
            ["Latent-predictor AUC, real test images (against the classifier's predictions)",
             fmt(table["latent_auc_real_vs_classifier"]), "—"],
            ["Realism: real-vs-generated classifier accuracy (0.5 is perfect)",
             fmt(table["realism_accuracy"]),
             fmt(paper.get("realism_accuracy")) + " (radiologists)"
             if paper.get("realism_accuracy") else "—"],
        ])),
        ("h2", "2. Inversion"),
        ("table", (["Measure", "Value"], [
            ["Pixel MSE of G(E(x)) (images in [0, 1])", fmt(inv["pixel_mse"], 4)],
            ["Pixel MSE, 95th percentile", fmt(inv["pixel_mse_p95"], 4)],
            ["SSIM of G(E(x))", fmt(inv["ssim"])],
            ["f(x) and f(G(E(x))) agree", fmt(inv["agreement"])],
        ])),
        ("p", "Identity (pixel distance, among the first "
              f"{r['identity']['images']} held-out inputs): top-1 retrieval of each input from "
              f"its reconstruction {fmt(r['identity']['top1'])} (chance "
              f"{fmt(r['identity']['chance'])}), median rank of the own input "
              f"{fmt(r['identity']['median_rank'], 1)}, spread ratio of the reconstructions "
              f"to the inputs {fmt(r['identity']['spread_ratio'])}."),
        ("p", "How much of each factor survives the inversion (oracle R² of the "
              "reconstruction's reading against the input's true factor):"),
        ("table", (["Factor", "R²"], [[k, fmt(v)] for k, v in
                                      inv["factor_r2_of_reconstructions"].items()])),
        ("h2", "2b. Coverage of the generator"),
        ("p", f"Oracle readings of {r['coverage']['generated_images']} generated against "
              f"{r['coverage']['real_images']} held-out real images; coverage is the overlap "
              "of the two histograms (deciles of the real readings; two-valued factors "
              "present above 0.5; the disease score at the grade thresholds). Precision / "
              f"recall (k={r['coverage']['k']} nearest-neighbour manifolds, "
              f"{r['coverage']['feature_space']}): {fmt(r['coverage']['precision'])} / "
              f"{fmt(r['coverage']['recall'])}."),
        ("table", (["Factor", "Coverage", "Real", "Generated"],
                   [[k, fmt(v["coverage"]), *_coverage_cells(v)]
                    for k, v in r["coverage"]["factors"].items()])),
        ("h2", "3. Validity"),
        ("table", (["Direction", "Flip rate", "Median |flip λ|", "Median Spearman(λ, P)",
                    "Share with Spearman >= 0.9", "Direction AUC (sampled)"],
                   [[name, fmt(v["flip_rate"]),
                     fmt(v["flip_lambda_abs_quantiles"][2]
                         if v["flip_lambda_abs_quantiles"] else None),
                     fmt(v["monotonicity_spearman_median"]), fmt(v["monotonic_share"]),
                     fmt(r["directions"][name]["auc"])]
                    for name, v in r["validity"].items()])),
        ("figure", ("probability.png", "Prediction along λ (median, quartiles)")),
        ("figure", ("flip_lambdas.png", "Where the prediction flips")),
        ("h2", "4. Faithfulness (oracle)"),
        ("p", f"The oracle reads every factor from a frame; factors it reads with held-out "
              f"R² below {faith['oracle']['min_r2']} are listed but not used for the nuisance "
              f"target ({', '.join(faith['oracle']['unreadable_nuisance']) or 'none'}). "
              "Spearman: median over images of the rank correlation of λ with the reading; "
              "change: mean |reading at the last λ minus at the first|, in units of the "
              "factor's spread over the phantoms."),
        ("table", _faithfulness_rows(faith)),
        ("figure", ("faithfulness.png", "Median Spearman(λ, factor)")),
        ("h2", "5. Localization against the ground-truth mask"),
        ("p", f"Mask: {local['mask']}. The difference map is |counterfactual − G(E(x))| "
              "(the flip frame, or the last frame searched). " + GRADCAM_NOTE),
        ("table", (["Method", "Pixel AUROC (mean)", "Pixel AUROC (median)", "Pointing game"],
                   [[name, fmt(v["auroc_mean"]), fmt(v["auroc_median"]),
                     fmt(v["pointing_game"])]
                    for name, v in (("StyleProbe difference map", local["difference_map"]),
                                    ("Grad-CAM", local["gradcam"])) if v is not None])),
        ("figure", ("localization.png", "Examples: input, reconstruction, counterfactual, "
                                        "difference, Grad-CAM, mask")),
        ("h2", "6. Bias discovery"),
        ("p", f"A classifier trained on phantoms whose corner marker agrees with the label on "
              f"{bias['shortcut_rate']:.0%} of them; its direction is probed with the same "
              f"engine. The generator draws the marker on "
              f"{bias['generator_marker_share']:.1%} of its samples (oracle)."),
        ("table", (["Shortcut classifier", "Value"], [
            ["Test AUC, marker as in training", fmt(bias["classifier"]["auc_marker_as_trained"])],
            ["Test AUC, marker independent of label",
             fmt(bias["classifier"]["auc_marker_independent"])],
            ["Test AUC, marker reversed", fmt(bias["classifier"]["auc_marker_reversed"])],
        ])),
        *(_bias_findings(bias) if bias["direction"] is not None else
          [("p", f"Its direction could not be probed: {bias['not_probed']}.")]),
        *attribute_blocks(r.get("attributes")),
        ("h2", "Timings"),
        ("table", (["Stage", "Seconds"], [[k, fmt(v, 1)] for k, v in r["timings_s"].items()])),
    ]
    return [b for b in out if b[0] != "figure" or b[1][0] in figure_names]


def _coverage_cells(factor: dict[str, Any]) -> list[str]:
    """What a factor's coverage compares: rates, grade histograms, or mean ± std."""
    if factor["kind"] == "two-valued":
        return [fmt(factor["real_rate"]), fmt(factor["generated_rate"])]
    if factor["kind"] == "grade":
        return [" ".join(fmt(v, 2) for v in factor[f"{side}_histogram"])
                for side in ("real", "generated")]
    return [f"{fmt(factor[f'{side}_mean'])} ± {fmt(factor[f'{side}_std'])}"
            for side in ("real", "generated")]


def _bias_findings(bias: dict[str, Any]) -> list[Block]:
    """The bias section's tables and figures once the shortcut direction was probed."""
    return [
        ("table", (["Shortcut direction", "Value"],
                   [["Direction AUC (sampled latents)", fmt(bias["direction"]["auc"])]])),
        ("table", (["Factor", "Shortcut direction: change", "Spearman",
                    "Bundled direction: change", "Spearman"],
                   [[k, fmt(v["abs_change_mean"]), fmt(v["spearman_median"]),
                     fmt(bias["bundled_direction"][k]["abs_change_mean"]),
                     fmt(bias["bundled_direction"][k]["spearman_median"])]
                    for k, v in bias["shortcut_direction"].items()])),
        ("table", (["Where the evidence points", "Shortcut classifier", "Bundled classifier"], [
            ["Difference map: share of mass in the marker region",
             fmt(bias["difference_mass_in_marker_region"]["shortcut_direction"]),
             fmt(bias["difference_mass_in_marker_region"]["bundled_direction"])],
            ["Grad-CAM: share of mass in the marker region (images with a marker)",
             fmt(bias["gradcam_mass_in_marker_region"]["shortcut_classifier"]),
             fmt(bias["gradcam_mass_in_marker_region"]["bundled_classifier"])],
            ["Marker region's share of the image", fmt(bias["marker_region_share_of_image"]),
             fmt(bias["marker_region_share_of_image"])],
            ["Identified (marker moves >= 2x every disease factor)", fmt(bias["identified"]),
             fmt(bias["bundled_direction_identified"])],
        ])),
        ("figure", ("bias_motion.png", "How far each factor moves")),
        ("figure", ("bias.png", "Images with a marker: Grad-CAM of the bundled and the "
                                "shortcut classifier; reconstruction, counterfactual and "
                                "difference along the shortcut classifier's direction")),
    ]


def _faithfulness_rows(faith: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    kinds = [k for k in ("plain", "orthogonalized") if k in faith]
    header = ["Factor", "Kind", "Oracle R²", *[f"Spearman, {k}" for k in kinds],
              *[f"Change, {k}" for k in kinds]]
    rows = []
    for name in [*faith["disease_factors"], *faith["nuisance_factors"]]:
        kind = "disease" if name in faith["disease_factors"] else "nuisance"
        rows.append([name, kind, fmt(faith["oracle"]["r2_held_out"].get(name)),
                     *[fmt(faith[k]["factors"][name]["spearman_median"]) for k in kinds],
                     *[fmt(faith[k]["factors"][name]["abs_change_mean"]) for k in kinds]])
    return header, rows


def markdown(page: list[Block]) -> str:
    """The blocks as Markdown; figures link to ``figures/<name>``."""
    lines: list[str] = []
    for kind, content in page:
        if kind == "h1":
            lines += [f"# {content}", ""]
        elif kind == "h2":
            lines += [f"## {content}", ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "table":
            header, rows = content
            lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "figure":
            name, caption = content
            lines += [f"![{caption}](figures/{name})", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def page_html(page: list[Block], images: dict[str, bytes]) -> str:
    """The blocks as one self-contained HTML page (figures inlined as data URIs)."""
    title = page[0][1] if page and page[0][0] == "h1" else "StyleProbe evaluation"
    return render_template("evaluation.html.j2", title=title, page=page, images=images,
                           inline=_inline_html)


def _inline_html(text: str) -> Markup:
    """Escape, then render the only inline Markdown the report uses: **bold**, `code`."""
    out = str(escape(text))
    for mark, tag in (("**", "strong"), ("`", "code")):
        pieces = out.split(mark)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
    return Markup(out)


def write_report(evaluation: Evaluation, out: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``report.html`` and ``figures/`` into ``out``;
    each file appears whole (written aside, then moved into place)."""
    out = Path(out)
    images = figures(evaluation)
    page = blocks(evaluation.results, list(images))
    paths = {"json": out / "report.json", "markdown": out / "report.md",
             "html": out / "report.html"}
    for name, data in images.items():
        _write(out / "figures" / name, data)
    _write(paths["json"], (json.dumps(_finite(evaluation.results), indent=2, allow_nan=False)
                           + "\n").encode())
    _write(paths["markdown"], markdown(page).encode())
    _write(paths["html"], page_html(page, images).encode())
    return paths


def _finite(value: Any) -> Any:
    """``value`` with every NaN replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- the results table of docs/ ----------------------------------------------------------------

def results_table(results: Sequence[dict[str, Any]], reports: dict[str, str]) -> str:
    """``docs/results.md``: StyleProbe's numbers next to the paper's for each model set,
    every target's verdict, and for each miss what would fix it. ``reports`` maps a model
    set to the (relative) path of its full report."""
    lines = [
        "# Results: StyleProbe against the paper",
        "",
        "Generated by `make evaluate` (`styleprobe evaluate`); do not edit by hand. The paper "
        "is Schutte, Moindrot et al., *Using StyleGAN for Visual Interpretability of Deep "
        "Learning Models on Medical Images* (2021), on real knee radiographs and histology; "
        "StyleProbe's numbers are measured on held-out procedural phantoms "
        "(see docs/model-cards/), where the truth is known.",
        "",
        "## The paper's table",
        "",
    ]
    header = ["Measure"]
    for r in results:
        header += [f"Paper ({r['phantoms']})", f"StyleProbe `{r['model_set']}`"]
    rows = [
        ("Classifier test AUC", "classifier_auc", lambda r: r["table"]["classifier_auc"]),
        ("Latent-predictor AUC (held-out sampled latents)", "latent_auc",
         lambda r: r["table"]["latent_auc_sampled"]),
        ("Latent-predictor AUC (real test images, encoder)", None,
         lambda r: r["table"]["latent_auc_real"]),
        ("Realism: real-vs-generated accuracy (paper: radiologists; 0.5 is perfect)",
         "realism_accuracy", lambda r: r["table"]["realism_accuracy"]),
        ("Inversion: pixel MSE / SSIM", None,
         lambda r: f"{fmt(r['inversion']['pixel_mse'], 4)} / {fmt(r['inversion']['ssim'])}"),
        ("Inversion: f(x) and f(G(E(x))) agree", None, lambda r: r["inversion"]["agreement"]),
        ("Inversion identity: top-1 retrieval among held-out inputs / spread ratio", None,
         lambda r: f"{fmt(r['identity']['top1'])} / {fmt(r['identity']['spread_ratio'])}"),
        ("Generator: precision / recall (k-NN manifolds, oracle features)", None,
         lambda r: f"{fmt(r['coverage']['precision'])} / {fmt(r['coverage']['recall'])}"),
        ("Generator coverage: marker rate generated / real; lowest factor coverage", None,
         lambda r: _marker_cell(r["coverage"])),
        ("Flip rate (plain / orthogonalized)", None,
         lambda r: " / ".join(fmt(v["flip_rate"]) for v in r["validity"].values())),
        ("Median Spearman(λ, P(target))", None,
         lambda r: r["validity"]["plain"]["monotonicity_spearman_median"]),
        ("Spearman(λ, disease score) (plain / orthogonalized)", None,
         lambda r: " / ".join(fmt(r["faithfulness"][k]["main_spearman"])
                              for k in r["validity"])),
        ("max abs Spearman(λ, nuisance) (plain / orthogonalized)", None,
         lambda r: " / ".join(_nuisance_cell(r["faithfulness"][k]) for k in r["validity"])),
        ("Largest nuisance change vs disease-score change, std units (plain / orth.)", None,
         lambda r: " / ".join(_change_cell(r["faithfulness"], k) for k in r["validity"])),
        ("Localization AUROC: difference map / Grad-CAM", None,
         lambda r: f"{fmt(r['localization']['difference_map']['auroc_mean'])} / "
                   f"{fmt((r['localization']['gradcam'] or {}).get('auroc_mean'))}"),
        ("Pointing game: difference map / Grad-CAM", None,
         lambda r: f"{fmt(r['localization']['difference_map']['pointing_game'])} / "
                   f"{fmt((r['localization']['gradcam'] or {}).get('pointing_game'))}"),
        ("Shortcut found: marker change vs largest disease change (std)", None,
         lambda r: _shortcut_cell(r["bias"])),
        ("Shortcut classifier AUC: marker as trained / reversed; generator draws marker",
         None, lambda r: f"{fmt(r['bias']['classifier']['auc_marker_as_trained'])} / "
                         f"{fmt(r['bias']['classifier']['auc_marker_reversed'])}; "
                         f"{r['bias']['generator_marker_share']:.1%}"),
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, paper_key, value in rows:
        cells = [label]
        for r in results:
            cells += [fmt(r["paper"].get(paper_key)) if paper_key else "—", fmt(value(r))]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "## Targets", ""]
    lines += ["| Model set | Target | Measured | Goal | Verdict |",
              "| --- | --- | --- | --- | --- |"]
    for r in results:
        for t in r["targets"]:
            lines.append("| " + " | ".join(_cell(c) for c in (
                r["model_set"], t["name"], fmt(t["measured"]), t["target"],
                verdict(t["met"]))) + " |")
    misses = [(r, t) for r in results for t in r["targets"] if t["met"] is not True]
    lines += ["", "## Misses and what would fix them", ""]
    if not misses:
        lines.append("None: every target was met.")
    for r, t in misses:
        hint = HINTS[t["id"].removesuffix("_plain").removesuffix("_orthogonalized")]
        state = (f"{fmt(t['measured'])} (goal {t['target']})" if t["met"] is False
                 else f"not measured: {t.get('reason', 'nothing to measure')}")
        lines.append(f"- **{r['model_set']}**, {t['name']}: {state}. Fix: {hint}")
    lines += ["", "## Notes", "", f"- {GRADCAM_NOTE}",
              "- Full reports (every number, plots, examples): "
              + ", ".join(f"[{name}]({path})" for name, path in reports.items()) + ".", ""]
    return "\n".join(lines)


def _marker_cell(coverage: dict[str, Any]) -> str:
    marker, low = coverage["factors"].get("marker"), coverage["min_coverage_factor"]
    rates = (f"{fmt(marker['generated_rate'])} / {fmt(marker['real_rate'])}; "
             if marker else "")
    return f"{rates}{low} {fmt(coverage['factors'][low]['coverage'])}"


def _change_cell(faith: dict[str, Any], kind: str) -> str:
    factors = faith[kind]["factors"]
    worst = max(faith["nuisance_factors"], key=lambda k: factors[k]["abs_change_mean"])
    return (f"{fmt(factors[worst]['abs_change_mean'])} ({worst}) vs "
            f"{fmt(factors[faith['main_factor']]['abs_change_mean'])}")


def _nuisance_cell(faith: dict[str, Any]) -> str:
    worst = faith["worst_nuisance_spearman"]
    return "—" if worst is None else f"{fmt(abs(worst))} ({faith['worst_nuisance']})"


def _shortcut_cell(bias: dict[str, Any]) -> str:
    if bias["direction"] is None:
        return f"not probed: {bias['not_probed']}"
    disease = [v["abs_change_mean"] for k, v in bias["shortcut_direction"].items()
               if k != "marker"]
    found = "found" if bias["identified"] else "not found"
    return (f"{found}: {fmt(bias['shortcut_direction']['marker']['abs_change_mean'])} vs "
            f"{fmt(max(disease))}")
