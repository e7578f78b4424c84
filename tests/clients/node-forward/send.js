// Sends COUNT audit events to the sidecar's Forward port with npm fluent-logger, asking
// for an ack per chunk (requireAckResponse), and prints {"acked": n, "errors": [...]}.
// Usage: node send.js PORT COUNT [Message|PackedForward|CompressedPackedForward] [SHARED_KEY]
'use strict';
const FluentLogger = require('fluent-logger');

const port = Number(process.argv[2]);
const count = Number(process.argv[3]);
const eventMode = process.argv[4] || 'PackedForward';
const sharedKey = process.argv[5];

const options = {
  host: '127.0.0.1',
  port,
  timeout: 10.0,
  reconnectInterval: 500,
  requireAckResponse: true,
  ackResponseTimeout: 10000,
  eventMode,
  flushInterval: 20,
  internalLogger: { info() {}, error() {} },
};
if (sharedKey) {
  options.security = { clientHostname: 'node-client', sharedKey };
}
const logger = FluentLogger.createFluentSender('node', options);

let acked = 0;
let done = 0;
const errors = [];
function finish() {
  process.stdout.write(JSON.stringify({ acked, errors }) + '\n');
  logger.end();
  process.exit(errors.length ? 1 : 0);
}

for (let n = 0; n < count; n++) {
  const time = new FluentLogger.EventTime(Math.floor(Date.now() / 1000), n);
  const record = {
    category: 'access',
    action: 'read',
    actor: { kind: 'user', name: 'node-user' },
    target: { resource: 'orders', name: `order-${n}` },
    n,
  };
  logger.emit('access', record, time, (error) => {
    if (error) {
      errors.push(String(error));
    } else {
      acked += 1;
    }
    done += 1;
    if (done === count) finish();
  });
}
setTimeout(() => {
  errors.push(`timed out with ${done} of ${count} callbacks`);
  finish();
}, 120000).unref();
