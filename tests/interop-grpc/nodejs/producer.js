// Sends COUNT messages to TOPIC with the official RocketMQ 5 Node.js client
// (rocketmq-client-nodejs, installed from npm into CLIENT_DIR by ../setup-nodejs-client.sh)
// through ENDPOINT, one at a time, and writes one line per acknowledged send to OUT:
//
//     <index> <message id> <epoch ms of the acknowledgement>
//
// A failed send (the client gave up after its attempts) is written as `FAILED <index> <error>`
// and the next one goes on. The same output as ../producer.py, for tests/tests/it/grpc_interop.rs.
'use strict';

const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: args } = parseArgs({
  options: {
    'client-dir': { type: 'string' },
    endpoint: { type: 'string' },
    topic: { type: 'string' },
    count: { type: 'string' },
    out: { type: 'string' },
  },
});
for (const name of ['client-dir', 'endpoint', 'topic', 'count', 'out']) {
  if (args[name] === undefined) {
    console.error(`producer.js: --${name} is required`);
    process.exit(2);
  }
}
const { Producer } = require(require.resolve('rocketmq-client-nodejs', { paths: [args['client-dir']] }));

async function main() {
  const count = Number.parseInt(args.count, 10);
  const producer = new Producer({ endpoints: args.endpoint, namespace: '', topics: [args.topic] });
  await producer.startup();
  const out = fs.openSync(args.out, 'w');
  let acked = 0;
  let failed = 0;
  try {
    for (let index = 0; index < count; index++) {
      const message = {
        topic: args.topic,
        body: Buffer.from(`js-${index}`),
        tag: 'interop',
        keys: [`key-${index}`],
      };
      let receipt;
      try {
        receipt = await producer.send(message);
      } catch (err) { // the client gave up: not acknowledged
        failed++;
        fs.writeSync(out, `FAILED ${index} ${err && err.name}\n`);
        continue;
      }
      acked++;
      fs.writeSync(out, `${index} ${receipt.messageId} ${Date.now()}\n`);
    }
  } finally {
    fs.closeSync(out);
    await producer.shutdown();
  }
  console.log(`acked=${acked} failed=${failed}`);
}

main().then(() => process.exit(0), (err) => {
  console.error('producer.js failed:', err);
  process.exit(1);
});
