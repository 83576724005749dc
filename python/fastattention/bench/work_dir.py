"""What a benchmark builds into its --work-dir (a random-weight model, say) is kept between runs:
built again only when what it was built from changed, or when an earlier build was cut short."""

from __future__ import annotations

import json
import os


def reuse_or_build(stamp_path: str, want: dict, build) -> bool:
    """Calls build() unless `stamp_path` holds `want` (a JSON-able dict: the shape, seed, ... the
    build depends on) from an earlier finished build. The stamp is removed before building and
    written after it, so a build cut short is redone. Returns True when the earlier build was
    reused."""
    want = json.loads(json.dumps(want))  # as read back: tuples are lists
    try:
        with open(stamp_path) as f:
            if json.load(f) == want:
                return True
    except (OSError, ValueError):
        pass
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    build()
    with open(stamp_path, "w") as f:
        json.dump(want, f)
    return False
