"""``python -m moonxp``: see `moonxp.cli`."""

from .cli import main_exit

main_exit()
