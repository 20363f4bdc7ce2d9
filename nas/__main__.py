"""``python -m nas``: the same program as ``python search.py`` and ``gumbel-nas``."""

from .cli import main_exit

if __name__ == "__main__":
    main_exit()
