"""Print SMPP submit throughput side by side against the SMSC simulator over loopback.

Scenarios, each at SMSC latency 0 ms and 20 ms: plain smpplib one submit_sm at a time; a bare
socket client (pre-encoded submit_sm, window 100 refilled per read: what the simulator can
answer at most, so a slow figure can be told apart from a slow SMSC side); our
SmppHook.submit_batch with a window of 100; the full send path (SmppSendOperator.execute with
the ledger in a throwaway PostgreSQL database: chunks claimed ahead in the send log, answers
logged behind the bind and settled into the ledger in bulk by operators/smpp_pipeline.py), also
with answers logged without waiting for the WAL flush (``synchronous_log=False``); and four
binds in parallel (one process and one hook each) at 20 ms. The simulator runs in its own
process so it does not share the GIL with the sender. Receipts are not requested
(registered_delivery false), so the figures are for the submit path alone. No assertions.

Run: ``.venv/bin/python bench/smpp.py`` (``--quick`` for a tenth of the messages;
``--pg-url`` for another PostgreSQL server).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from datetime import date, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AS_OF = date(2026, 11, 23)
TEXT = "【示范市税务】您2026年10月的增值税尚未缴纳，请于7日内办理。编号{n}"


BETWEEN_US_AND_KANNEL = """
Between the full send path and Kannel's batch path (~26,000 submit_sm/s, C, answers kept in
memory/a queue file): per message ~50 us of Python in the hook (split, encode, parse the
response) and ~57 us in this Python simulator, on the same 2 cores as PostgreSQL; a durable
record per message before its slot in the in-doubt bound frees (a send_response row, committed
with the WAL flush unless told otherwise), and one settle per row into the 5-index ledger row
(SUBMITTED, message ids, message_part) inside the task. At 20 ms SMSC latency one window in
doubt caps a bind at window / (round trip + log commit): 100 / 22 ms is about 4,500/s even with
no ledger at all, so every millisecond of log commit costs about 200 msg/s there.
"""


def quiet() -> None:
    logging.disable(logging.WARNING)


def start_simulator(latency: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "include.simulators.smsc", "--port", "0", "--latency", str(latency)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline().strip().rsplit(":", 1)[1])


def stop_simulator(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=30)


def set_smpp_conn(port: int, window: int = 100) -> None:
    os.environ["AIRFLOW_CONN_SMPP_DEFAULT"] = json.dumps(
        {
            "conn_type": "smpp",
            "host": "127.0.0.1",
            "port": port,
            "login": "bench",
            "password": "pw",
            "extra": {"window": window, "registered_delivery": "false", "source_addr": "12366"},
        }
    )


def smpplib_sync(port: int, n: int) -> float:
    import smpplib.client
    import smpplib.smpp

    from include.dunning.sms import split_text

    client = smpplib.client.Client("127.0.0.1", port, timeout=30, allow_unknown_opt_params=True)
    client.connect()
    client.bind_transmitter(system_id="bench", password="pw")
    start = time.perf_counter()
    for i in range(n):
        encoded = split_text(TEXT.format(n=i))
        pdu = smpplib.smpp.make_pdu(
            "submit_sm",
            client=client,
            source_addr="12366",
            destination_addr=f"139{i:08d}",
            data_coding=encoded.data_coding,
            short_message=encoded.parts[0],
        )
        client.send_pdu(pdu)
        client.read_pdu()
    elapsed = time.perf_counter() - start
    client.unbind()
    client.disconnect()
    return n / elapsed


def _bare_pdu(command_id: int, sequence: int, body: bytes) -> bytes:
    return struct.pack(">LLLL", 16 + len(body), command_id, 0, sequence) + body


def bare_socket(port: int, n: int, window: int = 100) -> float:
    """Send n pre-encoded submit_sm over a raw socket, refilling the window per response.

    No smpplib, no ledger, no per-message work: what the simulator answers at most, to tell
    whether a slow figure is the SMSC side or ours.
    """
    from include.dunning.sms import split_text

    text = split_text(TEXT.format(n=0)).parts[0]
    bodies = [
        b"\x00\x00\x0112366\x00\x00\x01"
        + f"139{i:08d}".encode()
        + b"\x00\x00\x00\x00\x00\x00\x00\x00\x08\x00"
        + bytes((len(text),))
        + text
        for i in range(n)
    ]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_bare_pdu(0x00000002, 1, b"bench\x00pw\x00\x00\x34\x00\x00\x00"))
    buf = bytearray()

    def take() -> list[int]:
        nonlocal buf
        data = sock.recv(262144)
        if not data:
            raise ConnectionError("simulator closed the connection")
        buf += data
        done, pos = [], 0
        while len(buf) - pos >= 16:
            length, command_id = struct.unpack_from(">LL", buf, pos)
            if len(buf) - pos < length:
                break
            done.append(command_id)
            pos += length
        del buf[:pos]
        return done

    while not take():
        pass
    start = time.perf_counter()
    sent = answered = 0
    while answered < n:
        burst = []
        while sent < n and sent - answered < window:
            burst.append(_bare_pdu(0x00000004, sent + 2, bodies[sent]))
            sent += 1
        if burst:
            sock.sendall(b"".join(burst))
        answered += sum(1 for c in take() if c == 0x80000004)
    elapsed = time.perf_counter() - start
    sock.close()
    return n / elapsed


def messages(n: int, offset: int = 0) -> list:
    from hooks.smpp import OutboundSms

    return [OutboundSms(f"k{i}", f"139{i:08d}", TEXT.format(n=i)) for i in range(offset, offset + n)]


def hook_window(port: int, n: int) -> float:
    from hooks.smpp import SmppHook

    set_smpp_conn(port)
    batch = messages(n)
    with SmppHook(bind_mode="transmitter") as hook:
        start = time.perf_counter()
        hook.submit_batch(batch)
        elapsed = time.perf_counter() - start
    return n / elapsed


def _bind_worker(port: int, n: int, offset: int, barrier, out) -> None:  # type: ignore[no-untyped-def]
    quiet()
    from hooks.smpp import SmppHook

    set_smpp_conn(port)
    batch = messages(n, offset)
    with SmppHook(bind_mode="transmitter") as hook:
        barrier.wait()
        start = time.time()
        hook.submit_batch(batch)
        out.put((start, time.time()))


def parallel_binds(port: int, n: int, binds: int = 4) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(binds), ctx.Queue()
    per = n // binds
    procs = [ctx.Process(target=_bind_worker, args=(port, per, k * per, barrier, out)) for k in range(binds)]
    for p in procs:
        p.start()
    spans = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return per * binds / (max(e for _, e in spans) - min(s for s, _ in spans))


def full_path(port: int, n: int, admin_url: str, *, synchronous_log: bool = True) -> float:
    import sqlalchemy as sa

    from include.dunning import ledger
    from include.dunning.ledger import DunningStore
    from operators.smpp import SmppSendOperator

    name = f"dunning_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.engine.make_url(admin_url).set(database=name)
    try:
        store = DunningStore(sa.create_engine(url))
        store.create_schema()
        store.upsert_planned(
            {
                "idempotency_key": ledger.idempotency_key("tax_payment", "2026-W48", f"D{i}", "s", "sms", 1),
                "campaign": "tax_payment",
                "period": "2026-W48",
                "as_of": AS_OF,
                "debtor_id": f"D{i}",
                "debtor_name": "某公司",
                "stage": "s",
                "channel": "sms",
                "attempt": 1,
                "phone": f"139{i:08d}",
                "template": "t",
                "message_text": TEXT.format(n=i),
                "parts": 1,
                "amount": None,
                "surcharge": None,
                "gateway": "smpp_default",
                "state": ledger.PLANNED,
                "reason": None,
                "planned_run_id": "r1",
                "planned_at": datetime(2026, 11, 23),
            }
            for i in range(n)
        )
        (batch_id,) = store.assign_batches("tax_payment", AS_OF, "r1", batch_size=n)
        store.engine.dispose()
        os.environ["AIRFLOW_CONN_DUNNING_STORE"] = json.dumps(
            {
                "conn_type": "postgres",
                "host": url.host,
                "port": url.port,
                "login": url.username,
                "password": url.password,
                "schema": name,
            }
        )
        set_smpp_conn(port)

        class TI:
            dag_id = "bench"

            def xcom_push(self, key, value):  # type: ignore[no-untyped-def]
                pass

        # The simulator takes messages at any hour: the bench measures sending, not the window.
        op = SmppSendOperator(
            task_id="send_sms",
            batch_id=batch_id,
            respect_sending_window=False,
            synchronous_log=synchronous_log,
        )
        start = time.perf_counter()
        counts = op.execute({"run_id": "r1", "ti": TI(), "params": {}})
        elapsed = time.perf_counter() - start
        if counts["submitted"] != n:
            raise RuntimeError(f"full path submitted {counts['submitted']} of {n} rows: {counts}")
        return n / elapsed
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "DUNNING_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args(argv)
    quiet()
    scale = 10 if args.quick else 1
    n0, n20, sync20 = 20_000 // scale, 5_000 // scale, 200 // min(scale, 4)
    rows: list[tuple[str, int, int, float]] = []
    for latency_ms, n in ((0, n0), (20, n20)):
        proc, port = start_simulator(latency_ms / 1000)
        try:
            sync_n = n if latency_ms == 0 else sync20
            rows.append(("smpplib, one at a time", latency_ms, sync_n, smpplib_sync(port, sync_n)))
            rows.append(("bare socket client, window 100", latency_ms, n, bare_socket(port, n)))
            rows.append(("SmppHook.submit_batch, window 100", latency_ms, n, hook_window(port, n)))
            rows.append(
                ("full send path, PG ledger, window 100", latency_ms, n, full_path(port, n, args.pg_url))
            )
            rate = full_path(port, n, args.pg_url, synchronous_log=False)
            rows.append(("  same, answers logged w/o WAL flush", latency_ms, n, rate))
            if latency_ms == 20:
                rows.append(
                    ("4 binds in parallel, window 100 each", latency_ms, n * 2, parallel_binds(port, n * 2))
                )
        finally:
            stop_simulator(proc)
    print(f"{'scenario':<40} {'latency':>8} {'messages':>9} {'msg/s':>9} {'x smpplib':>9}")
    base = {latency_ms: rate for name, latency_ms, _, rate in rows if name.startswith("smpplib")}
    for name, latency_ms, n, rate in rows:
        print(f"{name:<40} {latency_ms:>6} ms {n:>9,} {rate:>9,.0f} {rate / base[latency_ms]:>9.1f}")
    print(BETWEEN_US_AND_KANNEL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
