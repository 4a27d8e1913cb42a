"""``python -m ops`` = the ``citybrain`` command."""

from ops.cli import main

main()
