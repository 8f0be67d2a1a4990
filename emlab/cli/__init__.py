"""The command line: ``emlab-segment`` (``python -m emlab.cli.segment``)."""
