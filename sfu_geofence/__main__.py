"""``python -m sfu_geofence``: the same as the ``sfu-geofence`` command."""

import sys

from .cli import main

sys.exit(main())
