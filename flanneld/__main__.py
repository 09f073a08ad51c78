"""`python -m flanneld` is the `flanneld` command."""

from .cli import main

main()
