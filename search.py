#!/usr/bin/env python
"""Entry point: ``python search.py`` runs configs/default.yaml; see ``--help``."""

import sys

from nas.cli import main

if __name__ == "__main__":
    sys.exit(main())
