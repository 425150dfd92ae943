"""Consumes TOPIC as consumer group GROUP with the official RocketMQ 5 Python client
(rocketmq-python-client) through ENDPOINT, and writes one line per consumed message to OUT:

    <body> <delivery attempt> <epoch ms>

--mode simple: a SimpleConsumer receives batches and acks each message; the line is written once
its ack succeeded (an ack that failed leaves the message to come back). --mode push: a
PushConsumer whose listener writes the line and answers SUCCESS (the client acks).

It runs until the file STOP exists (it lists the indexes the producer had acknowledged, one a
line) and every index listed was consumed, or then nothing was consumed for --idle seconds, or
until --max-seconds pass. (This client's SimpleConsumer names a random queue in each receive;
the broker pops every queue of the topic whichever is named, as RocketMQ's proxy does, so a
receive waits out its 5 s long poll only when nothing is left anywhere.) Used by
tests/tests/it/grpc_interop.rs.
"""

import argparse
import os
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials,
                      FilterExpression, MessageListener, PushConsumer,
                      SimpleConsumer)


class Recorder:
    def __init__(self, path):
        self.out = open(path, "w", buffering=1)
        self.lock = threading.Lock()
        self.last = time.time()
        self.count = 0
        self.seen = set()

    def record(self, message):
        with self.lock:
            body = message.body.decode()
            self.out.write(f"{body} {message.delivery_attempt} {int(time.time() * 1000)}\n")
            self.last = time.time()
            self.count += 1
            self.seen.add(int(body.removeprefix("py-")))


class Listener(MessageListener):
    def __init__(self, recorder):
        self.recorder = recorder

    def consume(self, message):
        self.recorder.record(message)
        return ConsumeResult.SUCCESS


def done(args, recorder, started):
    if time.time() - started > args.max_seconds:
        return True
    if not os.path.exists(args.stop):
        return False
    with open(args.stop) as stop:
        wanted = {int(line) for line in stop.read().split()}
    with recorder.lock:
        if wanted <= recorder.seen:
            return True
    return time.time() - recorder.last > args.idle


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--mode", choices=("simple", "push"), required=True)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--access-key", default="",
                        help="sign every request with this account (brokers enforcing ACL)")
    parser.add_argument("--secret-key", default="")
    parser.add_argument("--tls-ca", help="connect over TLS, trusting this CA certificate (PEM)")
    args = parser.parse_args()
    if args.tls_ca:
        # gRPC's default trust roots: the client has no setting to name a CA itself.
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = args.tls_ca

    config = ClientConfiguration(args.endpoint, Credentials(args.access_key, args.secret_key))
    subscription = {args.topic: FilterExpression()}
    recorder = Recorder(args.out)
    started = time.time()
    errors = 0
    if args.mode == "push":
        consumer = PushConsumer(config, args.group, Listener(recorder), subscription,
                                tls_enable=bool(args.tls_ca))
        consumer.startup()
        try:
            while not done(args, recorder, started):
                time.sleep(0.2)
        finally:
            consumer.shutdown()
    else:
        consumer = SimpleConsumer(config, args.group, subscription, await_duration=5,
                                  tls_enable=bool(args.tls_ca))
        consumer.startup()
        try:
            while not done(args, recorder, started):
                try:
                    messages = consumer.receive(32, 15)
                except Exception as err:  # a failover: try again
                    errors += 1
                    print(f"receive failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                    time.sleep(0.05)
                    continue
                for message in messages:
                    try:
                        consumer.ack(message)
                    except Exception as err:  # not acked: it comes back
                        errors += 1
                        print(f"ack failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                        continue
                    recorder.record(message)
        finally:
            consumer.shutdown()
    print(f"consumed={recorder.count} errors={errors}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
