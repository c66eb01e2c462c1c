"""The command line: one module per command, each a thin argparse wrapper over library functions."""
