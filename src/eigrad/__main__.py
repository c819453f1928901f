"""``python -m eigrad <command>``: see :mod:`eigrad.cli`."""

from .cli import main

raise SystemExit(main())
