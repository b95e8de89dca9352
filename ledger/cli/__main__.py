"""``python -m ledger.cli``: the ``consent`` command."""

from ledger.cli.main import main

main()
