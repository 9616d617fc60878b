"""One-line notes on stderr for what the runtime changed on the user's behalf (frames it could not
decode, a shorter clip than asked, --fit auto). Not errors: the run goes on."""
from __future__ import annotations

import sys


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)
