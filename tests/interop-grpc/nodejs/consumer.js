// Consumes TOPIC as consumer group GROUP with a PushConsumer of the official RocketMQ 5 Node.js
// client (rocketmq-client-nodejs, installed from npm into CLIENT_DIR by
// ../setup-nodejs-client.sh) through ENDPOINT, and writes one line per consumed message to OUT:
//
//     <body> <delivery attempt> <epoch ms>
//
// The listener writes the line and answers SUCCESS (the client acks). It runs until the file
// STOP exists (it lists the indexes the producer had acknowledged, one a line) and every index
// listed was consumed, or then nothing was consumed for --idle seconds, or until --max-seconds
// pass. The same output as ../consumer.py --mode push, for tests/tests/it/grpc_interop.rs.
'use strict';

const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: args } = parseArgs({
  options: {
    'client-dir': { type: 'string' },
    endpoint: { type: 'string' },
    topic: { type: 'string' },
    group: { type: 'string' },
    out: { type: 'string' },
    stop: { type: 'string' },
    idle: { type: 'string', default: '60' },
    'max-seconds': { type: 'string', default: '240' },
  },
});
for (const name of ['client-dir', 'endpoint', 'topic', 'group', 'out', 'stop']) {
  if (args[name] === undefined) {
    console.error(`consumer.js: --${name} is required`);
    process.exit(2);
  }
}
const { PushConsumer, ConsumeResult } = require(
  require.resolve('rocketmq-client-nodejs', { paths: [args['client-dir']] }));

const out = fs.openSync(args.out, 'w');
const seen = new Set();
let last = Date.now();
let count = 0;

function record(message) {
  const body = message.body.toString('utf-8');
  fs.writeSync(out, `${body} ${message.deliveryAttempt ?? 1} ${Date.now()}\n`);
  last = Date.now();
  count++;
  seen.add(Number.parseInt(body.replace(/^js-/, ''), 10));
}

function done(started) {
  if (Date.now() - started > Number(args['max-seconds']) * 1000) {
    return true;
  }
  if (!fs.existsSync(args.stop)) {
    return false;
  }
  const wanted = fs.readFileSync(args.stop, 'utf-8').split(/\s+/).filter(Boolean).map(Number);
  if (wanted.every((index) => seen.has(index))) {
    return true;
  }
  return Date.now() - last > Number(args.idle) * 1000;
}

async function main() {
  const consumer = new PushConsumer({
    endpoints: args.endpoint,
    namespace: '',
    consumerGroup: args.group,
    subscriptions: new Map([[args.topic, '*']]),
    messageListener: {
      consume(message) {
        record(message);
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await consumer.startup();
  const started = Date.now();
  try {
    while (!done(started)) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    await consumer.shutdown();
    fs.closeSync(out);
  }
  console.error(`consumed=${count}`);
}

main().then(() => process.exit(0), (err) => {
  console.error('consumer.js failed:', err);
  process.exit(1);
});
