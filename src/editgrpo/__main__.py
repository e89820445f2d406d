"""``python -m editgrpo``: the command line, for launchers that run modules
(``accelerate launch -m editgrpo train RECIPE``)."""

from editgrpo.cli import main

raise SystemExit(main())
