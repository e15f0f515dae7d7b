"""Measure GSM modem SMS throughput through GsmModemHook against the modem emulator over ptys.

Each emulated modem takes ``--sms-delay`` seconds per SMS (3 s: a real modem's 20 SMS/min);
one hook per modem sends in its own thread. Prints SMS/min for one modem and for four, and
the ratio. The issue's targets: one modem >= 90% of 60 / sms_delay, four >= 3.5x one.

    python bench/modem.py [--sms-delay 3] [--messages 10] [--modems 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hooks.gsm_modem import GsmModemHook
from include.simulators.modem import ModemEmulator

TEXT = "【12366】您好，您2026年4月的增值税尚未缴纳，请尽快办理。"


def run(modems: int, messages: int, sms_delay: float, lock_dir: str) -> float:
    """Send ``messages`` single-part SMS through each of ``modems`` emulators; return SMS/min overall."""
    with ExitStack() as stack:
        emulators = [stack.enter_context(ModemEmulator("pty", sms_delay=sms_delay)) for _ in range(modems)]
        hooks = []
        for number, emulator in enumerate(emulators):
            conn_id = f"bench_modem_{number}"
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {"conn_type": "gsm_modem", "host": emulator.url, "extra": {"lock_dir": lock_dir}}
            )
            hooks.append(stack.enter_context(GsmModemHook(conn_id)))
        errors: list[BaseException] = []

        def send(hook: GsmModemHook, offset: int) -> None:
            try:
                for i in range(messages):
                    hook.send_sms(f"139{offset:04d}{i:04d}", TEXT, key=f"bench|{offset}|{i}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(hook, n)) for n, hook in enumerate(hooks)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
        delivered = sum(len(e.messages) for e in emulators)
        if delivered != modems * messages:
            raise RuntimeError(f"{delivered} of {modems * messages} messages reached the emulators")
    return modems * messages / elapsed * 60


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sms-delay", type=float, default=3.0)
    parser.add_argument("--messages", type=int, default=10, help="SMS per modem")
    parser.add_argument("--modems", type=int, default=4)
    args = parser.parse_args()
    logging.getLogger("airflow.task.hooks").setLevel(logging.WARNING)  # one line per SMS otherwise
    ceiling = 60 / args.sms_delay
    with tempfile.TemporaryDirectory() as lock_dir:
        one = run(1, args.messages, args.sms_delay, lock_dir)
        many = run(args.modems, args.messages, args.sms_delay, lock_dir)
    print(
        f"sms_delay {args.sms_delay:g} s, {args.messages} SMS per modem (ceiling {ceiling:.1f} SMS/min per modem)"
    )
    print(f"1 modem:  {one:6.2f} SMS/min  ({one / ceiling:.1%} of the ceiling)")
    print(f"{args.modems} modems: {many:6.2f} SMS/min  ({many / one:.2f}x one modem)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
