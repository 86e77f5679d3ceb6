"""``python -m styleprobe.cli``: the command line without the installed script."""

from styleprobe.cli import main

main()
