"""A long fuzz run of every route (tests/fuzzing.py), for the figures in bench/README.md.

    .venv/bin/python bench/fuzz_routes.py --requests 20000

Puente runs in this process in front of the fake OpenAI upstream (tests/fakes/), with the admin
key set so the admin routes are reached too; prints the status counts and every failure (a 500,
or an error outside the envelope). Exits 1 when there was a failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fuzzing import fuzz
from tests.inprocess import InProcessPuente

ADMIN = "admin-key-for-the-fuzz-run-000000000000"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    fake = FakeOpenAI().start()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = {**gateway_config(fake), "auth": "none"}
            env = {"PUENTE_ADMIN_KEY": ADMIN}
            with InProcessPuente(config, Path(tmp), env=env) as puente:
                headers = {"Authorization": f"Bearer {ADMIN}"}
                tally = fuzz(puente.url, "fake-model", args.requests, headers, seed=args.seed)
    finally:
        fake.stop()
    took = time.monotonic() - started
    print(f"{tally.sent} requests in {took:.0f} s (seed {args.seed})")
    for status, count in sorted(tally.statuses.items()):
        print(f"  HTTP {status}: {count}")
    print(f"failures (500s, errors outside the envelope): {len(tally.failures)}")
    for failure in tally.failures:
        print("  " + failure)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
