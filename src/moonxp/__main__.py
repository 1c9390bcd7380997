"""``python -m moonxp``: see `moonxp.app.cli`."""

from .app.cli import main_exit

main_exit()
