"""Command-line entry points (scripts/*.py and the dytok-* console scripts): flags in, one library call."""
