"""Entry point: ``python launch.py --help``. Parses nothing itself."""
import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
