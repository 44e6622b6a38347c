"""Machine: whose files a run reads. Several machines may write one Chroma server with the same paths (two laptops'
~/Pictures): a record knows the machine it came from (`record_keys.MACHINE`), and a machine's prune removes only its
own records. A machine is named by PHOTO_MACHINE, else by its host name."""

from __future__ import annotations

import os
import socket

MACHINE_ENV = "PHOTO_MACHINE"


def this_machine() -> str:
    return os.environ.get(MACHINE_ENV, "").strip() or socket.gethostname()
