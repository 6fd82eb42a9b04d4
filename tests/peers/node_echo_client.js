#!/usr/bin/env node
// WebSocket echo client built on the npm `ws` package (resolved through the
// NODE_PATH environment variable, e.g. target/xtask/node/node_modules).
//
// Contract (see README.md in this directory):
//   node_echo_client.js URL --compress {on,off} [--http2]
//
// With --http2 the WebSocket is an HTTP/2 stream (RFC 8441): Node's own
// `http2` module opens the connection (h2c prior knowledge for ws://, ALPN
// h2 for wss://, certificates not checked: loopback tests only), waits for
// the server's SETTINGS to enable the extended CONNECT, sends CONNECT with
// `:protocol: websocket`, expects 200, and `ws` frames messages on the
// stream. Compression is not negotiated on this path.
//
// Connects to URL, then reads standard input line by line. Each line is a JSON
// object, {"text": "..."} or {"binary_b64": "..."}; the client sends it as a
// text or binary message, waits for the next message from the server and
// prints it on stdout in the same JSON form, one object per line. At end of
// input it closes with code 1000, waits for the server's close frame and
// prints `CLOSED <code> <reason>`. If the server closes first, it prints that
// line at once. The code is 1005 for a close frame without a code and 1006
// when no close frame arrived at all. Exits 0 once the connection is closed,
// 1 if it cannot connect or an input line is malformed.
'use strict';

const readline = require('node:readline');
const { parseArgs } = require('node:util');
const http2 = require('node:http2');
const WebSocket = require('ws');

const MAX_MESSAGE_SIZE = 64 * 1024 * 1024;

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      compress: { type: 'string', default: 'off' },
      http2: { type: 'boolean', default: false },
    },
  });
  if (positionals.length !== 1) {
    throw new Error('usage: node_echo_client.js URL --compress {on,off} [--http2]');
  }
  if (values.compress !== 'on' && values.compress !== 'off') {
    throw new Error(`--compress: expected on or off, got ${values.compress}`);
  }
  if (values.http2 && values.compress === 'on') {
    throw new Error('--http2 does not negotiate compression: use --compress off');
  }
  return { url: positionals[0], compress: values.compress === 'on', http2: values.http2 };
}

/**
 * A client WebSocket on an HTTP/2 stream opened by an extended CONNECT
 * (RFC 8441 §4-5). Emits 'error' then 'close' if the server refuses.
 */
function overHttp2(url) {
  const target = new URL(url);
  const origin = `${target.protocol === 'wss:' ? 'https' : 'http'}://${target.host}`;
  // No address: `ws` takes the server role, which sets up no handshake;
  // the client role (masking, expecting unmasked frames) is set below.
  // `closeTimeout` must be given: without it the close timer fires at once.
  const socket = new WebSocket(null, undefined, { closeTimeout: 30_000 });
  socket._isServer = false;
  const session = http2.connect(origin, { rejectUnauthorized: false });
  const fail = (error) => {
    socket.emit('error', error);
    socket.emitClose();
    session.destroy();
  };
  session.on('error', fail);
  session.once('remoteSettings', (settings) => {
    if (!settings.enableConnectProtocol) {
      fail(new Error('the server did not enable the extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)'));
      return;
    }
    const stream = session.request({
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': origin.split(':')[0],
      ':path': `${target.pathname}${target.search}`,
      ':authority': target.host,
      'sec-websocket-version': '13',
    });
    stream.on('error', fail);
    stream.once('response', (headers) => {
      if (headers[':status'] !== 200) {
        fail(new Error(`the server answered ${headers[':status']} instead of 200`));
        return;
      }
      stream.removeListener('error', fail);
      // The session ends with the one stream it carries.
      stream.once('close', () => session.close());
      socket.setSocket(stream, Buffer.alloc(0), { maxPayload: MAX_MESSAGE_SIZE });
    });
  });
  return socket;
}

/** Parses one input line into the payload to send and its type. */
function decodeLine(line) {
  const item = JSON.parse(line);
  if (item !== null && typeof item.text === 'string') {
    return { data: item.text, binary: false };
  }
  if (item !== null && typeof item.binary_b64 === 'string') {
    return { data: Buffer.from(item.binary_b64, 'base64'), binary: true };
  }
  throw new Error(`expected {"text": ...} or {"binary_b64": ...}, got ${line.slice(0, 80)}`);
}

function encodeMessage(data, isBinary) {
  return isBinary ? { binary_b64: data.toString('base64') } : { text: data.toString('utf8') };
}

function exit(code, lastLine) {
  if (lastLine === undefined) {
    process.exit(code);
  }
  process.stdout.write(`${lastLine}\n`, () => process.exit(code));
}

async function main() {
  const { url, compress, http2: useHttp2 } = options();
  const socket = useHttp2
    ? overHttp2(url)
    : new WebSocket(url, {
        maxPayload: MAX_MESSAGE_SIZE,
        perMessageDeflate: compress ? { threshold: 0 } : false,
      });

  // Messages are delivered to the one pending waiter, or queued until asked for.
  const queued = [];
  let waiter = null;
  let opened = false;
  socket.on('message', (data, isBinary) => {
    const message = encodeMessage(data, isBinary);
    if (waiter !== null) {
      const wake = waiter;
      waiter = null;
      wake(message);
    } else {
      queued.push(message);
    }
  });
  const nextMessage = () =>
    queued.length > 0
      ? Promise.resolve(queued.shift())
      : new Promise((resolve) => {
          waiter = resolve;
        });

  socket.on('error', (error) => {
    if (!opened) {
      console.error(`node_echo_client: cannot connect to ${url}: ${error.message}`);
    }
  });
  // However the connection ends, this is the last thing the client does.
  socket.on('close', (code, reason) => {
    if (opened) {
      exit(0, `CLOSED ${code} ${reason.toString('utf8')}`);
    } else {
      exit(1);
    }
  });
  await new Promise((resolve) => socket.once('open', resolve));
  opened = true;

  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim() === '') {
      continue;
    }
    let payload;
    try {
      payload = decodeLine(line);
    } catch (error) {
      console.error(`node_echo_client: bad input line: ${error.message}`);
      socket.removeAllListeners('close');
      socket.on('close', () => exit(1));
      socket.close(1011, 'bad input');
      return;
    }
    socket.send(payload.data, { binary: payload.binary });
    const echo = await nextMessage();
    process.stdout.write(`${JSON.stringify(echo)}\n`);
  }
  socket.close(1000);
}

main().catch((error) => {
  console.error(`node_echo_client: ${error.message}`);
  process.exit(1);
});
