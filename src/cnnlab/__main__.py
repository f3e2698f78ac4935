"""Allow ``python -m cnnlab``."""

from cnnlab.cli import main

main()
