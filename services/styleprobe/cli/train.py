"""``styleprobe train gan|encoder|classifier``: resumable training runs.

Each run folder gets ``run.json`` (:mod:`styleprobe.training.runrecord`), written at each
checkpoint and at the end. SIGINT or SIGTERM finishes the current step, saves the
checkpoint and exits with 130 or 143; the same command resumes from that step.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from styleprobe.cli.common import UserError
from styleprobe.data.datasets import CheckedFolder, ImageSet
from styleprobe.training.runrecord import RunRecord

log = logging.getLogger(__name__)
PHANTOM_CHANNELS = {"knee": 1, "histology": 3}
PHANTOM_CLASSES = {"knee": ["healthy", "OA"], "histology": ["normal", "tumour"]}
HELD_OUT_SEED = 1_000_003  # phantoms for testing never share a seed with training data
# The GAN options that its checkpoint fixes (option: default); a resumed run refuses others.
GAN_ARCHITECTURE = {"resolution": 64, "w_dim": 512, "mapping_layers": 8,
                    "channel_base": 4096, "channel_max": 512, "batch": 32}
GAN_HELP = {"w_dim": "z and w size (paper: 512)", "batch": "images per step"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in ``--help``, unless its help text says it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train networks").add_subparsers(
        dest="train_command", required=True)

    gan = train.add_parser("gan", formatter_class=HelpFormatter,
                           help="train a StyleGAN2 (resumes from OUT/checkpoint.pt)")
    _data_args(gan)
    for name, default in GAN_ARCHITECTURE.items():
        gan.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                         help=f"{GAN_HELP.get(name, '')} (default: {default}; on resume, "
                              "the checkpoint's)".lstrip())
    gan.add_argument("--iterations", type=int, default=2000, help="total, including resumed")
    gan.add_argument("--lr", type=float, default=None,
                     help="learning rate (default: 0.0025 x sqrt(batch / 32), at most 0.005)")
    gan.add_argument("--ada", choices=["auto", "on", "off"], default="auto",
                     help="adaptive discriminator augmentation (auto: on below "
                          "50 000 images)")
    gan.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                     help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    gan.add_argument("--compile", default="", metavar="MODE",
                     help="torch.compile mode (e.g. reduce-overhead: CUDA graphs; "
                          "default: not compiled)")
    _run_args(gan, checkpoint_every=100)
    gan.set_defaults(func=_gan)

    enc = train.add_parser("encoder", formatter_class=HelpFormatter,
                           help="train an encoder into a GAN's latent space")
    _data_args(enc)
    enc.add_argument("--gan", required=True, help="GAN checkpoint.pt")
    enc.add_argument("--iterations", type=int, default=3000, help="total, including resumed")
    enc.add_argument("--bank-size", type=int, default=10240,
                     help="generated pairs (w, G(w)) made before training")
    enc.add_argument("--pixel-weight", type=float, default=1.0,
                     help="weight of the pixel loss on real images (0: generated pairs only)")
    enc.add_argument("--lowpass-weight", type=float, default=2.0,
                     help="weight of the loss on 8x8 local means of real images")
    enc.add_argument("--prior-weight", type=float, default=0.0,
                     help="weight of the latent prior on real images' encodings")
    enc.add_argument("--statistics-weight", type=float, default=0.0,
                     help="weight of the loss on real images' texture statistics")
    _run_args(enc, checkpoint_every=200)
    enc.set_defaults(func=_encoder)

    clf = train.add_parser("classifier", formatter_class=HelpFormatter,
                           help="train the example classifier")
    _data_args(clf)
    clf.add_argument("--resolution", type=int, default=64)
    clf.add_argument("--steps", type=int, default=300,
                     help="batches of 64 to train on (300: a usable classifier of a few "
                          "hundred images)")
    clf.add_argument("--epochs", type=int, default=None,
                     help="passes over the training images instead of --steps "
                          "(default: use --steps)")
    clf.add_argument("--test", default=None,
                     help="held-out folder (default: held-out phantoms, or 20%% of --data)")
    clf.add_argument("--class-names", default=None,
                     help="comma-separated, in label order (default: from the phantom set)")
    clf.add_argument("--shortcut-rate", type=float, default=None,
                     help="train on phantoms with the planted marker at this rate "
                          "(default: none planted)")
    _run_args(clf, checkpoint_every=100, minutes=False)
    clf.set_defaults(func=_classifier)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="'knee', 'histology' (phantoms) or a folder of images")
    p.add_argument("--n", type=int, default=20000, help="phantoms to render")
    p.add_argument("--channels", type=int, default=None, choices=[1, 3],
                   help="image channels when --data is a folder (default: 1; phantoms: "
                        "theirs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", required=True, help="run folder: checkpoint and run.json")


def _run_args(p: argparse.ArgumentParser, checkpoint_every: int, minutes: bool = True) -> None:
    p.add_argument("--checkpoint-every", type=int, default=checkpoint_every,
                   help="steps between checkpoints (one is also saved at the end and on "
                        "SIGINT or SIGTERM)")
    if minutes:
        p.add_argument("--minutes", type=float, default=None,
                       help="stop after this long (default: no time limit)")
    p.add_argument("--restart", action="store_true",
                   help="start over instead of resuming from the checkpoint in --out")


def channels_of(args: argparse.Namespace) -> int:
    return PHANTOM_CHANNELS.get(args.data, args.channels or 1)


def check_training_data(args: argparse.Namespace,
                        classes: int | None = None) -> CheckedFolder | None:
    """``--data`` checked before any work: a folder's images and ``factors.csv`` (labels
    below ``classes`` when given); None for phantoms."""
    from styleprobe.data.datasets import check_folder

    if args.n <= 0:
        raise UserError("--n must be a positive number of images")
    if args.data in PHANTOM_CHANNELS:
        return None
    return check_folder(Path(args.data), classes)


def load_training_data(args: argparse.Namespace, size: int, channels: int,
                       held_out: bool = False, n: int | None = None,
                       classes: int | None = None,
                       checked: CheckedFolder | None = None) -> ImageSet:
    """Phantoms by name (held-out ones from their own seed) or a folder of images, checked
    by :func:`check_training_data` (unless ``checked`` is its result already)."""
    from styleprobe.data.datasets import phantom_set, render

    folder = checked or check_training_data(args, classes)
    if folder is not None:
        return folder.load(size, channels)
    seed = HELD_OUT_SEED + args.seed if held_out else args.seed
    phantoms = phantom_set(args.data, seed=seed, size=size,
                           shortcut_rate=getattr(args, "shortcut_rate", None))
    return render(phantoms, n or args.n)


def split(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded random split into (rest, held out)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(data))
    cut = max(1, int(len(data) * fraction))
    if len(data) - cut < 1:
        raise UserError(f"{len(data)} image(s) are too few to hold some out for testing")
    return data.subset(np.sort(order[cut:])), data.subset(np.sort(order[:cut]))


@dataclass
class _Session:
    """The run record of a training command, once it has one."""

    record: RunRecord | None = None

    def start(self, args: argparse.Namespace, kind: str, checked: CheckedFolder | None,
              from_step: int) -> RunRecord:
        options = {k: v for k, v in vars(args).items() if k != "func"}
        data = checked.fingerprint() if checked is not None else {
            "phantoms": args.data, "n": args.n, "seed": args.seed,
            "shortcut_rate": getattr(args, "shortcut_rate", None)}
        self.record = RunRecord(Path(args.out), kind, options, data, from_step)
        self.record.update(from_step)
        return self.record


@contextmanager
def _session() -> Iterator[_Session]:
    """A training command that SIGINT or SIGTERM stops with one line on stderr saying how
    to resume, and exit code 128 + the signal's number; never a traceback."""
    from styleprobe.training.checkpoint import TrainingInterruptedError

    session = _Session()
    try:
        yield session
    except TrainingInterruptedError as exc:
        if session.record is not None:
            session.record.update(exc.step, "interrupted")
        print(f"styleprobe: stopped by {signal.Signals(exc.signum).name} at step {exc.step}; "
              f"checkpoint saved to {exc.checkpoint}; run the same command again to resume",
              file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("styleprobe: interrupted before training began; nothing was saved",
              file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None


def _resuming(name: str, step: int, total: int, ckpt: Path) -> None:
    print(f"{name}: resuming from step {step} of {total} ({ckpt}; --restart to start over)",
          file=sys.stderr)


def _refuse_other_settings(ckpt: Path, differences: dict[str, tuple[Any, Any]]) -> None:
    """UserError listing the options whose values differ from the checkpoint's."""
    if differences:
        listed = ", ".join(f"{option} {given} (checkpoint: {saved})"
                           for option, (given, saved) in differences.items())
        raise UserError(f"{ckpt} was trained with other settings: {listed}; drop or match "
                        "them to resume, or --restart to start over")


def _gan_trainer(args: argparse.Namespace, ckpt: Path) -> Any:
    """A GanTrainer resumed from ``ckpt`` (refused if the options differ) or a new one;
    one of several processes when torchrun started this one."""
    from styleprobe.models.stylegan2 import GeneratorConfig
    from styleprobe.training.distributed import join, world_from_env
    from styleprobe.training.gan import GanTrainConfig, GanTrainer

    world = world_from_env()
    device = join(world, args.device)
    if ckpt.exists() and not args.restart:
        trainer = GanTrainer.resume(ckpt, device=device, world=world)
        saved = {**trainer.gen_cfg.to_dict(), "batch": trainer.cfg.batch}
        given = {k: getattr(args, k) for k in GAN_ARCHITECTURE}
        if args.channels is not None or args.data in PHANTOM_CHANNELS:
            given["channels"] = channels_of(args)
        _refuse_other_settings(ckpt, {f"--{k.replace('_', '-')}": (v, saved[k])
                                      for k, v in given.items()
                                      if v is not None and v != saved[k]})
        _resuming("gan", trainer.step, args.iterations, ckpt)
        return trainer
    arch = {k: GAN_ARCHITECTURE[k] if getattr(args, k) is None else getattr(args, k)
            for k in GAN_ARCHITECTURE}
    cfg = GeneratorConfig(resolution=arch["resolution"], channels=channels_of(args),
                          z_dim=arch["w_dim"], w_dim=arch["w_dim"],
                          mapping_layers=arch["mapping_layers"],
                          channel_base=arch["channel_base"], channel_max=arch["channel_max"])
    ada = {"auto": None, "on": True, "off": False}[args.ada]
    try:
        return GanTrainer(cfg, GanTrainConfig(batch=arch["batch"], seed=args.seed, lr=args.lr,
                                              ada=ada, precision=args.precision,
                                              compile=args.compile),
                          device=device, world=world)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def _gan(args: argparse.Namespace) -> None:
    from styleprobe.training.gan import train_gan

    checked = check_training_data(args)
    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    with _session() as session:
        trainer = _gan_trainer(args, ckpt)
        data = load_training_data(args, trainer.gen_cfg.resolution, trainer.gen_cfg.channels,
                                  checked=checked)
        train_gan(trainer, data, out, iterations=args.iterations, minutes=args.minutes,
                  checkpoint_every=args.checkpoint_every,
                  record=(session.start(args, "gan", checked, trainer.step)
                          if trainer.world.main else None))
    print(f"gan checkpoint at step {trainer.step}: {ckpt}")


def _encoder(args: argparse.Namespace) -> None:
    from styleprobe.training.checkpoint import load_checkpoint
    from styleprobe.training.encoder import EncoderTrainConfig, EncoderTrainer, train_encoder
    from styleprobe.training.gan import load_generator

    checked = check_training_data(args)
    G = load_generator(Path(args.gan))
    cfg = G.cfg
    out = Path(args.out)
    with _session() as session:
        trainer = EncoderTrainer(G, EncoderTrainConfig(
            bank_size=args.bank_size, seed=args.seed, pixel_weight=args.pixel_weight,
            lowpass_weight=args.lowpass_weight, prior_weight=args.prior_weight,
            statistics_weight=args.statistics_weight),
            device=args.device)
        ckpt = out / "encoder.pt"
        if ckpt.exists() and not args.restart:
            state = load_checkpoint(ckpt, kind="encoder")
            generator = {"resolution": cfg.resolution, "channels": cfg.channels,
                         "w_dim": cfg.w_dim}
            _refuse_other_settings(ckpt, {f"--gan's {k}": (v, state["config"][k])
                                          for k, v in generator.items()
                                          if v != state["config"][k]})
            trainer.load_state_dict(state)
            _resuming("encoder", trainer.step, args.iterations, ckpt)
        data = load_training_data(args, cfg.resolution, cfg.channels, checked=checked)
        if checked is None:
            held = load_training_data(args, cfg.resolution, cfg.channels, held_out=True,
                                      n=512)
        else:
            data, held = split(data, 0.1, args.seed)
        metrics = train_encoder(trainer, data, held, out, str(args.gan), args.iterations,
                                args.minutes, checkpoint_every=args.checkpoint_every,
                                record=session.start(args, "encoder", checked, trainer.step))
    print(json.dumps({"encoder": str(ckpt), "step": trainer.step, **metrics}, indent=2))


def _classifier(args: argparse.Namespace) -> None:
    from styleprobe.data.datasets import check_folder
    from styleprobe.training.classifier import (
        ClassifierTrainConfig,
        train_classifier,
        unfinished,
    )

    if args.class_names:
        names = [c.strip() for c in args.class_names.split(",") if c.strip()]
    elif args.data in PHANTOM_CLASSES:
        names = PHANTOM_CLASSES[args.data]
    else:
        raise UserError("--class-names is required when training on a folder")
    if len(names) < 2:
        raise UserError(f"--class-names needs at least two classes, got {names}")
    checked = check_training_data(args, len(names))
    checked_test = None if args.test is None else check_folder(Path(args.test), len(names))
    out = Path(args.out)
    ckpt = out / "classifier.pt"
    if args.restart:
        ckpt.unlink(missing_ok=True)
    with _session() as session:
        resumed = unfinished(ckpt)
        if resumed is not None:
            _resuming("classifier", resumed["step"], resumed["steps"], ckpt)
        channels = channels_of(args)
        data = load_training_data(args, args.resolution, channels, checked=checked)
        if checked_test is not None:
            test = checked_test.load(args.resolution, channels)
        elif checked is None:
            test = load_training_data(args, args.resolution, channels, held_out=True,
                                      n=max(1000, args.n // 5))
        else:
            data, test = split(data, 0.2, args.seed)
        metrics = train_classifier(
            data, test, names, out,
            ClassifierTrainConfig(steps=args.steps, epochs=args.epochs, seed=args.seed),
            device=args.device, checkpoint_every=args.checkpoint_every,
            record=session.start(args, "classifier", checked,
                                 0 if resumed is None else resumed["step"]))
    print(json.dumps({"classifier": str(ckpt), **metrics}, indent=2))
