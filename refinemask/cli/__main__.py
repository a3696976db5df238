"""``python -m refinemask.cli`` (and ``torchrun ... -m refinemask.cli``) = ``rmbench``."""

import sys

from refinemask.cli import main

sys.exit(main())
