"""`python -m generator` runs the `tricks` command."""

from generator.cli import main

main()
