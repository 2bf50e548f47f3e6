#!/usr/bin/env python3
"""A long job as a user writes one: calls pachd in a loop with the real pachyderm_sdk from PyPI.

Usage: pachd_loop.py MODE SECONDS INTERVAL

MODE says where each call's client comes from:
  from-config   a new ``pachyderm_sdk.Client.from_config()`` every iteration, reading ``$PACH_CONFIG`` (what a
                script that runs pachctl-style commands again and again does under ``pachagent exec``);
  agent         one ``pachagent.client()`` made once and used for every call (a notebook's client).

Every INTERVAL seconds for SECONDS it calls ``auth.who_am_i()``. It prints one JSON object on stdout: the number of
calls and failures, the first failures' messages, how many distinct tokens it saw (counted by their SHA-256; the
tokens themselves are never printed), the usernames pachd named, and whether ``PACHD_ADDRESS`` was set.
"""

import hashlib
import json
import os
import sys
import time


def main() -> int:
    mode, seconds, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    calls, failures, errors, tokens, users = 0, 0, [], set(), set()
    shared = None
    if mode == "agent":
        import pachagent

        shared = pachagent.client()
    elif mode != "from-config":
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    from pachyderm_sdk import Client

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        client = shared if shared is not None else Client.from_config(os.environ["PACH_CONFIG"])
        tokens.add(hashlib.sha256((client.auth_token or "").encode()).hexdigest())
        try:
            users.add(client.auth.who_am_i().username)
            calls += 1
        except Exception as e:  # noqa: BLE001 - every failure counts, whatever its type
            failures += 1
            if len(errors) < 5:
                errors.append(f"{type(e).__name__}: {e}"[:300])
        time.sleep(interval)
    print(
        json.dumps(
            {
                "calls": calls,
                "failures": failures,
                "errors": errors,
                "distinct_tokens": len(tokens),
                "users": sorted(users),
                "pachd_address_set": "PACHD_ADDRESS" in os.environ,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
