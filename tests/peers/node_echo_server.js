#!/usr/bin/env node
// WebSocket echo server built on the npm `ws` package (resolved through the
// NODE_PATH environment variable, e.g. target/xtask/node/node_modules).
//
// Contract (see README.md in this directory):
//   node_echo_server.js --port PORT --compress {on,off}
//
// Binds 127.0.0.1:PORT (0 picks an ephemeral port), prints exactly one line
// `LISTENING <port>` to stdout once it accepts connections, echoes every
// message back with the same type (text as text, binary as binary; messages up
// to 64 MiB), and exits 0 when its standard input reaches end of file, closing
// open connections with 1001 (going away).
'use strict';

const { parseArgs } = require('node:util');
const { WebSocketServer } = require('ws');

const MAX_MESSAGE_SIZE = 64 * 1024 * 1024;

function options() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      compress: { type: 'string', default: 'off' },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port: not a port number: ${values.port}`);
  }
  if (values.compress !== 'on' && values.compress !== 'off') {
    throw new Error(`--compress: expected on or off, got ${values.compress}`);
  }
  return { port, compress: values.compress === 'on' };
}

function main() {
  const { port, compress } = options();
  const server = new WebSocketServer({
    host: '127.0.0.1',
    port,
    maxPayload: MAX_MESSAGE_SIZE,
    // threshold 0: compress every message, not only those over 1 KiB.
    perMessageDeflate: compress ? { threshold: 0 } : false,
  });

  server.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
    socket.on('error', () => {}); // the close event follows; nothing to do
  });
  server.on('listening', () => {
    process.stdout.write(`LISTENING ${server.address().port}\n`);
  });
  server.on('error', (error) => {
    console.error(`node_echo_server: ${error.message}`);
    process.exit(1);
  });

  // Standard input reaching end of file is the signal to stop: close open
  // connections with 1001 (going away), as the Python server does, then exit.
  const stop = () => {
    for (const socket of server.clients) {
      socket.close(1001);
    }
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

main();
