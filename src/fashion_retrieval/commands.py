"""Subcommands beyond ``inspect``; imported by ``cli.main`` so each stays a thin wrapper."""
