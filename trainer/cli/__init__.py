"""Command-line front ends: argparse, logging set-up, one library call, ``error: ...`` and exit 2 on bad input."""
