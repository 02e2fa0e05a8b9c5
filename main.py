"""Fleet updater for music players: ``python main.py --help``."""

import sys

from fleet_updater.cli import main

if __name__ == "__main__":
    sys.exit(main())
