"""Sends COUNT messages to TOPIC with the official RocketMQ 5 Python client (rocketmq-python-client)
through ENDPOINT, one at a time, and writes one line per acknowledged send to OUT:

    <index> <message id> <epoch ms of the acknowledgement>

A failed send (the client gave up after its attempts) is written as `FAILED <index>` and the next
one goes on. With --transactional, every message is a transaction's half message committed after
the send; a checker commits any the broker asks about. Used by tests/tests/it/grpc_interop.rs.
"""

import argparse
import os
import sys
import time

from rocketmq import (ClientConfiguration, Credentials, Message, Producer,
                      TransactionChecker, TransactionResolution)


class CommitEverything(TransactionChecker):
    """Answers every check-back: commit (the local transaction of this test always succeeds)."""

    def check(self, message):
        return TransactionResolution.COMMIT


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--transactional", action="store_true")
    parser.add_argument("--fifo-groups", type=int, default=0,
                        help="message groups to spread messages over (0: not FIFO)")
    parser.add_argument("--access-key", default="",
                        help="sign every request with this account (brokers enforcing ACL)")
    parser.add_argument("--secret-key", default="")
    parser.add_argument("--tls-ca", help="connect over TLS, trusting this CA certificate (PEM)")
    args = parser.parse_args()
    if args.tls_ca:
        # gRPC's default trust roots: the client has no setting to name a CA itself.
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = args.tls_ca

    config = ClientConfiguration(args.endpoint, Credentials(args.access_key, args.secret_key))
    checker = CommitEverything() if args.transactional else None
    producer = Producer(config, (args.topic,), checker, tls_enable=bool(args.tls_ca))
    producer.startup()
    acked = failed = 0
    try:
        with open(args.out, "w", buffering=1) as out:
            for index in range(args.count):
                message = Message()
                message.topic = args.topic
                message.body = f"py-{index}".encode()
                message.tag = "interop"
                message.keys = f"key-{index}"
                if args.fifo_groups:
                    message.message_group = f"group-{index % args.fifo_groups}"
                try:
                    if args.transactional:
                        transaction = producer.begin_transaction()
                        receipt = producer.send(message, transaction)
                        transaction.commit()
                    else:
                        receipt = producer.send(message)
                except Exception as err:  # the client gave up: not acknowledged
                    failed += 1
                    out.write(f"FAILED {index} {type(err).__name__}\n")
                    continue
                acked += 1
                out.write(f"{index} {receipt.message_id} {int(time.time() * 1000)}\n")
    finally:
        producer.shutdown()
    print(f"acked={acked} failed={failed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
