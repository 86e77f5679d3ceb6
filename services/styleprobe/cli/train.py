"""``styleprobe train gan|encoder|classifier``: resumable training runs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from styleprobe.cli.common import UserError
from styleprobe.data.datasets import CheckedFolder, ImageSet

log = logging.getLogger(__name__)
PHANTOM_CHANNELS = {"knee": 1, "histology": 3}
PHANTOM_CLASSES = {"knee": ["healthy", "OA"], "histology": ["normal", "tumour"]}
HELD_OUT_SEED = 1_000_003  # phantoms for testing never share a seed with training data


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train networks").add_subparsers(
        dest="train_command", required=True)

    gan = train.add_parser("gan", help="train a StyleGAN2 (resumes from OUT/checkpoint.pt)")
    _data_args(gan)
    gan.add_argument("--resolution", type=int, default=64)
    gan.add_argument("--w-dim", type=int, default=512, help="z and w size (paper: 512)")
    gan.add_argument("--mapping-layers", type=int, default=8)
    gan.add_argument("--channel-base", type=int, default=4096)
    gan.add_argument("--channel-max", type=int, default=512)
    gan.add_argument("--batch", type=int, default=32)
    gan.add_argument("--iterations", type=int, default=2000, help="total, including resumed")
    gan.add_argument("--minutes", type=float, default=None, help="stop after this long")
    gan.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    gan.set_defaults(func=_gan)

    enc = train.add_parser("encoder", help="train an encoder into a GAN's latent space")
    _data_args(enc)
    enc.add_argument("--gan", required=True, help="GAN checkpoint.pt")
    enc.add_argument("--iterations", type=int, default=3000)
    enc.add_argument("--minutes", type=float, default=None)
    enc.add_argument("--bank-size", type=int, default=10240)
    enc.add_argument("--pixel-weight", type=float, default=1.0,
                     help="weight of the pixel loss on real images (0: generated pairs only)")
    enc.add_argument("--lowpass-weight", type=float, default=2.0,
                     help="weight of the loss on 8x8 local means of real images")
    enc.add_argument("--prior-weight", type=float, default=0.0,
                     help="weight of the latent prior on real images' encodings")
    enc.add_argument("--statistics-weight", type=float, default=0.0,
                     help="weight of the loss on real images' texture statistics")
    enc.add_argument("--restart", action="store_true")
    enc.set_defaults(func=_encoder)

    clf = train.add_parser("classifier", help="train the example classifier")
    _data_args(clf)
    clf.add_argument("--resolution", type=int, default=64)
    clf.add_argument("--epochs", type=int, default=8)
    clf.add_argument("--test", default=None,
                     help="held-out folder (default: held-out phantoms, or 20%% of --data)")
    clf.add_argument("--class-names", default=None,
                     help="comma-separated, in label order (default: from the phantom set)")
    clf.add_argument("--shortcut-rate", type=float, default=None,
                     help="train on phantoms with the planted marker at this rate")
    clf.set_defaults(func=_classifier)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="'knee', 'histology' (phantoms) or a folder of images")
    p.add_argument("--n", type=int, default=20000, help="phantoms to render")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3],
                   help="image channels when --data is a folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", required=True)


def channels_of(args: argparse.Namespace) -> int:
    return PHANTOM_CHANNELS.get(args.data, args.channels)


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


def _gan(args: argparse.Namespace) -> None:
    from styleprobe.models.stylegan2 import GeneratorConfig
    from styleprobe.training.gan import GanTrainConfig, GanTrainer, train_gan

    checked = check_training_data(args)
    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not args.restart:
        trainer = GanTrainer.resume(ckpt, device=args.device)
        log.info("resuming", extra={"checkpoint": str(ckpt), "step": trainer.step})
    else:
        cfg = GeneratorConfig(resolution=args.resolution, channels=channels_of(args),
                              z_dim=args.w_dim, w_dim=args.w_dim,
                              mapping_layers=args.mapping_layers,
                              channel_base=args.channel_base, channel_max=args.channel_max)
        trainer = GanTrainer(cfg, GanTrainConfig(batch=args.batch, seed=args.seed),
                             device=args.device)
    data = load_training_data(args, trainer.gen_cfg.resolution, trainer.gen_cfg.channels,
                              checked=checked)
    train_gan(trainer, data, out, iterations=args.iterations, minutes=args.minutes)
    print(f"gan checkpoint at step {trainer.step}: {ckpt}")


def _encoder(args: argparse.Namespace) -> None:
    from styleprobe.training.checkpoint import load_checkpoint
    from styleprobe.training.encoder import EncoderTrainConfig, EncoderTrainer, train_encoder
    from styleprobe.training.gan import load_generator

    checked = check_training_data(args)
    G = load_generator(Path(args.gan))
    cfg = G.cfg
    out = Path(args.out)
    trainer = EncoderTrainer(G, EncoderTrainConfig(
        bank_size=args.bank_size, seed=args.seed, pixel_weight=args.pixel_weight,
        lowpass_weight=args.lowpass_weight, prior_weight=args.prior_weight,
        statistics_weight=args.statistics_weight),
        device=args.device)
    ckpt = out / "encoder.pt"
    if ckpt.exists() and not args.restart:
        trainer.load_state_dict(load_checkpoint(ckpt, kind="encoder"))
    data = load_training_data(args, cfg.resolution, cfg.channels, checked=checked)
    if checked is None:
        held = load_training_data(args, cfg.resolution, cfg.channels, held_out=True, n=512)
    else:
        data, held = split(data, 0.1, args.seed)
    metrics = train_encoder(trainer, data, held, out, str(args.gan), args.iterations,
                            args.minutes)
    print(json.dumps({"encoder": str(ckpt), "step": trainer.step, **metrics}, indent=2))


def _classifier(args: argparse.Namespace) -> None:
    from styleprobe.data.datasets import check_folder
    from styleprobe.training.classifier import ClassifierTrainConfig, train_classifier

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
    channels = channels_of(args)
    data = load_training_data(args, args.resolution, channels, checked=checked)
    if checked_test is not None:
        test = checked_test.load(args.resolution, channels)
    elif checked is None:
        test = load_training_data(args, args.resolution, channels, held_out=True,
                                  n=max(1000, args.n // 5))
    else:
        data, test = split(data, 0.2, args.seed)
    metrics = train_classifier(data, test, names, Path(args.out),
                               ClassifierTrainConfig(epochs=args.epochs, seed=args.seed),
                               device=args.device)
    print(json.dumps({"classifier": str(Path(args.out) / "classifier.pt"), **metrics}, indent=2))
