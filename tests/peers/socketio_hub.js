#!/usr/bin/env node
// A Socket.IO 4 fan-out server: the peer row of the fan-out benchmark
// (`cargo xtask bench`, section fanout), built the way a Socket.IO app
// would build what `duplex serve`'s hub does without history: rooms as
// channels, an HTTP publish endpoint, a broadcast to the room.
// `socket.io` is resolved through NODE_PATH (target/xtask/node/node_modules).
//
// Contract (see README.md in this directory):
//   socketio_hub.js --port PORT
//
// Binds 127.0.0.1:PORT (0 picks an ephemeral port) and prints exactly one
// line `LISTENING <port>` once it accepts connections.
// - Socket.IO clients (WebSocket transport only, no polling) emit
//   `subscribe` with a channel name and an acknowledgement callback; the
//   server joins them to that room and acknowledges with `true`.
// - `POST /api/publish` with `{"channel": C, "data": D}` (the body of
//   `duplex serve`'s HTTP API) emits `publication` with D to room C and
//   answers 200 `{"channel": C, "offset": N}`, N counting per channel; a
//   body that does not parse is 400.
// Exits 0 when its standard input reaches end of file.
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');
const { Server } = require('socket.io');

// The largest publish body accepted (duplex serve's default message limit).
const MAX_BODY = 64 * 1024;

function options() {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port: not a port number: ${values.port}`);
  }
  return { port };
}

function reply(res, status, body) {
  const json = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(json),
  });
  res.end(json);
}

function main() {
  const { port } = options();
  const offsets = new Map();
  let io;
  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/api/publish') {
      reply(res, 404, { error: 'not found: POST /api/publish' });
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reply(res, 413, { error: 'body too large' });
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        reply(res, 400, { error: `not JSON: ${e.message}` });
        return;
      }
      if (typeof body.channel !== 'string' || !('data' in body)) {
        reply(res, 400, { error: 'expected {"channel": string, "data": any}' });
        return;
      }
      const offset = (offsets.get(body.channel) || 0) + 1;
      offsets.set(body.channel, offset);
      io.to(body.channel).emit('publication', body.data);
      reply(res, 200, { channel: body.channel, offset });
    });
  });
  io = new Server(server, { transports: ['websocket'], serveClient: false });
  io.on('connection', (socket) => {
    socket.on('subscribe', (channel, ack) => {
      if (typeof channel !== 'string') {
        if (typeof ack === 'function') ack(false);
        return;
      }
      socket.join(channel);
      if (typeof ack === 'function') ack(true);
    });
  });
  server.on('error', (error) => {
    console.error(`socketio_hub: ${error.message}`);
    process.exit(1);
  });
  server.listen(port, '127.0.0.1', () => {
    process.stdout.write(`LISTENING ${server.address().port}\n`);
  });

  const stop = () => {
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

main();
