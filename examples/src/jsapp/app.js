// A small JSON API as a CGI program, built into a WASI 0.2 component by componentize-js.
//
//   GET  /jsapp[/]?x=1   the method, PATH_INFO, the query string and GREETING (a WasmEnv)
//   POST /jsapp/echo     parses the JSON request body and sends it back
//   anything else        404, set by the guest with a `Status:` header
//
// The CGI environment, stdin and stdout are the WASI interfaces themselves, imported by name.
import { getEnvironment } from 'wasi:cli/environment@0.2.12';
import { getStdin } from 'wasi:cli/stdin@0.2.12';
import { getStdout } from 'wasi:cli/stdout@0.2.12';

function readBody(length) {
  const stream = getStdin();
  const chunks = [];
  let got = 0;
  while (got < length) {
    let chunk;
    try {
      chunk = stream.blockingRead(BigInt(length - got));
    } catch (e) {
      break; // the stream is closed: a body shorter than CONTENT_LENGTH
    }
    chunks.push(chunk);
    got += chunk.length;
  }
  const body = new Uint8Array(got);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.length;
  }
  return body;
}

function send(status, value) {
  const text = `Status: ${status}\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(value, null, 1)}\n`;
  getStdout().blockingWriteAndFlush(new TextEncoder().encode(text));
}

export const run = {
  run() {
    const env = Object.fromEntries(getEnvironment());
    const method = env.REQUEST_METHOD || 'GET';
    const path = env.PATH_INFO || '';
    if ((path === '' || path === '/') && method === 'GET') {
      send('200 OK', { method, path_info: path, query: env.QUERY_STRING || '', greeting: env.GREETING ?? null });
    } else if (path === '/echo' && method === 'POST') {
      const body = readBody(Number(env.CONTENT_LENGTH || 0));
      try {
        send('200 OK', { received: JSON.parse(new TextDecoder().decode(body)), bytes: body.length });
      } catch (e) {
        send('400 Bad Request', { error: `the body is not JSON: ${e.message}` });
      }
    } else {
      send('404 Not Found', { error: 'no such route', path_info: path });
    }
  },
};
