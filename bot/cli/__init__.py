"""The `patronbot` command: `main.py` builds the tree; each module adds one group of subcommands."""
