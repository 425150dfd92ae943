#!/usr/bin/env python3
"""Turns bench/compare-nats.sh's runs.jsonl into a markdown table of medians and RaftMQ/NATS
ratios, and checks the targets of issue 7.

usage: bench/summarize.py runs.jsonl [machine.txt]
"""

import json
import statistics
import sys

SHAPE_NAMES = {
    "sync": "sync publish (1 in flight)",
    "w256": "pipelined publish, window 256",
    "p4w256": "4 publishers x window 256",
    "batch": "RaftMQ 8 batches of 128 in flight vs NATS 4 x 256",
    "batch256": "RaftMQ 8 batches of 256 in flight vs NATS window 256",
    "consume": "consume (pull, from the start)",
    "e2e": "end-to-end, 1 in flight",
}
# The NATS shape each RaftMQ shape is compared with.
NATS_PEER = {"batch": "p4w256", "batch256": "w256"}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def collect(path):
    groups = {}
    with open(path) as runs:
        for line in runs:
            line = line.strip()
            if not line:
                continue
            run = json.loads(line)
            if run.get("status") != "ok":
                continue
            key = (run["system"], run["shape"], run["size"])
            groups.setdefault(key, []).append(run)
    return groups


def stats(runs):
    if not runs:
        return None
    reports = [r["report"] for r in runs]

    def lat(field, pct):
        return median([(p.get(field) or {}).get(pct) for p in reports])

    flushes_per_k = []
    for r in runs:
        total = r["report"].get("total_messages") or 0
        if total:
            flushes_per_k.append(r["disk_flushes"] * 1000.0 / total)
    return {
        "rounds": len(runs),
        "msgs_per_s": median([p.get("msgs_per_s") for p in reports]),
        "mb_per_s": median([p.get("mb_per_s") for p in reports]),
        "p50_us": lat("latency_us", "p50"),
        "p99_us": lat("latency_us", "p99"),
        "e2e_p50_us": lat("e2e_latency_us", "p50"),
        "e2e_p99_us": lat("e2e_latency_us", "p99"),
        "cpu_us_per_msg": median([r.get("cpu_us_per_msg") for r in runs]),
        "flushes_per_1k": median(flushes_per_k),
        "load1": median([r.get("load1") for r in runs]),
    }


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.{digits}f}"


def main():
    groups = collect(sys.argv[1])
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as machine:
            print("```")
            print(machine.read().rstrip())
            print("```\n")
    sizes = sorted({k[2] for k in groups}, reverse=True)
    shapes = [s for s in SHAPE_NAMES if any(k[1] == s for k in groups)]
    print("Medians over rounds. Ratios are RaftMQ / NATS: above 1 is better for throughput, "
          "below 1 is better for latency and CPU.\n")
    print("| shape | size | RaftMQ msgs/s | NATS msgs/s | ratio | RaftMQ p50 ms | NATS p50 ms "
          "| ratio | RaftMQ p99 ms | NATS p99 ms | RaftMQ CPU us/msg | NATS CPU us/msg | ratio "
          "| RaftMQ flushes/1k msgs | NATS flushes/1k msgs | load1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for shape in shapes:
        for size in sizes:
            ours = stats(groups.get(("raftmq", shape, size), []))
            theirs = stats(groups.get(("nats", NATS_PEER.get(shape, shape), size), []))
            if ours is None and theirs is None:
                continue
            ours = ours or {}
            theirs = theirs or {}
            summary[(shape, size)] = (ours, theirs)
            p50 = "e2e_p50_us" if shape == "e2e" else "p50_us"
            p99 = "e2e_p99_us" if shape == "e2e" else "p99_us"
            ms = lambda v: None if v is None else v / 1000.0  # noqa: E731
            loads = [v for v in (ours.get("load1"), theirs.get("load1")) if v is not None]
            print(
                f"| {SHAPE_NAMES[shape]} | {size} B "
                f"| {fmt(ours.get('msgs_per_s'))} | {fmt(theirs.get('msgs_per_s'))} "
                f"| {ratio(ours.get('msgs_per_s'), theirs.get('msgs_per_s'))} "
                f"| {fmt(ms(ours.get(p50)), 2)} | {fmt(ms(theirs.get(p50)), 2)} "
                f"| {ratio(ours.get(p50), theirs.get(p50))} "
                f"| {fmt(ms(ours.get(p99)), 2)} | {fmt(ms(theirs.get(p99)), 2)} "
                f"| {fmt(ours.get('cpu_us_per_msg'), 1)} | {fmt(theirs.get('cpu_us_per_msg'), 1)} "
                f"| {ratio(ours.get('cpu_us_per_msg'), theirs.get('cpu_us_per_msg'))} "
                f"| {fmt(ours.get('flushes_per_1k'), 1)} | {fmt(theirs.get('flushes_per_1k'), 1)} "
                f"| {fmt(median(loads), 1)} |"
            )
    print()
    print("e2e rows show send-start-to-delivery latency; the others show send-to-acknowledgement.")
    print("CPU is the three servers' user+system time during the run (warm-up included) per "
          "message acknowledged or consumed; flushes are the disk's, machine-wide.\n")

    print("Targets (issue 7):\n")
    for size in sizes:
        def get(shape, side, field):
            pair = summary.get((shape, size))
            return None if pair is None else pair[side].get(field)

        ours_pub = max([v for v in (get(s, 0, "msgs_per_s") for s in ("w256", "p4w256", "batch", "batch256")) if v]
                       or [None], key=lambda v: v or 0)
        nats_pub = max([v for v in (get(s, 1, "msgs_per_s") for s in ("w256", "p4w256")) if v]
                       or [None], key=lambda v: v or 0)
        checks = [
            ("pipelined/batched publish >= 2x NATS (best shape each)",
             ratio(ours_pub, nats_pub), ours_pub and nats_pub and ours_pub >= 2 * nats_pub),
            ("consume >= 2x NATS", ratio(get("consume", 0, "msgs_per_s"), get("consume", 1, "msgs_per_s")),
             (get("consume", 0, "msgs_per_s") or 0) >= 2 * (get("consume", 1, "msgs_per_s") or float("inf"))),
            ("sync publish p50 <= 2x NATS", ratio(get("sync", 0, "p50_us"), get("sync", 1, "p50_us")),
             (get("sync", 0, "p50_us") or float("inf")) <= 2 * (get("sync", 1, "p50_us") or 0)),
        ]
        for shape in ("sync", "w256", "p4w256", "consume"):
            ours_cpu, nats_cpu = get(shape, 0, "cpu_us_per_msg"), get(shape, 1, "cpu_us_per_msg")
            checks.append((f"server CPU per message lower than NATS ({shape})", ratio(ours_cpu, nats_cpu),
                           ours_cpu is not None and nats_cpu is not None and ours_cpu < nats_cpu))
        for name, value, met in checks:
            print(f"- {size} B: {name}: ratio {value}: {'MET' if met else 'missed'}")
    print()
    print("NATS 2.9.10 acknowledges a publish before fsync (no sync_interval option; it syncs "
          "every 2 minutes by default); RaftMQ acknowledges only after a majority has fsynced.")


if __name__ == "__main__":
    main()
