"""``python -m hydrovisor`` is the ``hydrovisor`` command."""

from hydrovisor.cli import main

main()
