"""`python -m graphad.cli ...`: the `graphad` command (graphad.cli.main)."""
import sys

from .main import main

sys.exit(main())
