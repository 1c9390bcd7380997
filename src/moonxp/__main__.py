"""``python -m moonxp``: see `moonxp.app.cli`; `process` installs the signal handlers before the heavy imports."""

from .app.process import main_exit

main_exit()
