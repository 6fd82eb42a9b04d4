#!/usr/bin/env node
// A client that says GOAWAY with WebSockets open, over HTTP/2 (RFC 8441),
// with nothing but Node's own `http2`: it opens two sockets to URL (an
// `http://HOST:PORT/echo` served with h2c), echoes a message on each,
// sends GOAWAY, echoes again on each (the streams opened before it go on),
// then closes them with 1000 and prints `OK` once the server closed back.
//
//   node_h2_goaway.js http://127.0.0.1:PORT/echo
'use strict';

const http2 = require('node:http2');

/** A masked client frame (RFC 6455 §5.2): FIN, `opcode`, `payload`. */
function frame(opcode, payload) {
  const mask = Buffer.from([1, 2, 3, 4]);
  const head = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([head, mask, body]);
}

/** The next server frame on `stream`: { opcode, payload } (unmasked, short). */
function nextFrame(stream, state) {
  return new Promise((resolve, reject) => {
    const take = () => {
      if (state.buf.length >= 2) {
        const len = state.buf[1] & 0x7f;
        if (len < 126 && state.buf.length >= 2 + len) {
          const f = { opcode: state.buf[0] & 0x0f, payload: state.buf.subarray(2, 2 + len) };
          state.buf = state.buf.subarray(2 + len);
          stream.off('data', onData);
          resolve(f);
          return true;
        }
      }
      return false;
    };
    const onData = (d) => {
      state.buf = Buffer.concat([state.buf, d]);
      take();
    };
    if (!take()) {
      stream.on('data', onData);
      stream.once('error', reject);
    }
  });
}

async function open(session, target) {
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': 'http',
    ':path': target.pathname,
    ':authority': target.host,
    'sec-websocket-version': '13',
  });
  const headers = await new Promise((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
  if (headers[':status'] !== 200) throw new Error(`answered ${headers[':status']}`);
  return { stream, state: { buf: Buffer.alloc(0) } };
}

async function echo(socket, text) {
  socket.stream.write(frame(0x1, Buffer.from(text)));
  const f = await nextFrame(socket.stream, socket.state);
  if (f.opcode !== 0x1 || f.payload.toString() !== text) {
    throw new Error(`expected the echo of ${text}, got opcode ${f.opcode}: ${f.payload}`);
  }
}

async function main() {
  const target = new URL(process.argv[2]);
  const session = http2.connect(`http://${target.host}`);
  session.on('error', (e) => {
    console.error(`session: ${e.message}`);
    process.exit(1);
  });
  await new Promise((resolve) => session.once('remoteSettings', resolve));
  const sockets = [await open(session, target), await open(session, target)];
  for (const [i, s] of sockets.entries()) await echo(s, `before ${i}`);
  session.goaway(http2.constants.NGHTTP2_NO_ERROR);
  for (const [i, s] of sockets.entries()) await echo(s, `after GOAWAY ${i}`);
  for (const s of sockets) {
    s.stream.write(frame(0x8, Buffer.from([0x03, 0xe8])));
    const f = await nextFrame(s.stream, s.state);
    if (f.opcode !== 0x8 || f.payload.readUInt16BE(0) !== 1000) {
      throw new Error(`expected the server's close 1000, got opcode ${f.opcode}`);
    }
    s.stream.end();
  }
  session.close();
  console.log('OK');
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
