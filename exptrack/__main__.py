"""`python -m exptrack` is the same as the `exp` command."""

from exptrack.cli import main

main()
