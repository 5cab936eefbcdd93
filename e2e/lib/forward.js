// A TCP forwarder that runs inside a network namespace: 127.0.0.1:<free port> there to a
// target address. The NAT test needs it because chromium, with the project's fixed
// --host-resolver-rules, reaches nothing but 127.0.0.1 by URL (an IP literal included),
// and because only a localhost page is a secure context that may open the camera. Only the
// page and its signaling socket take this path; media goes by ICE, through the NAT.
//
// As a script: node forward.js HOST:PORT, prints "READY <port>" once listening.
import { spawn } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);

/**
 * Starts a forwarder inside `netns` to `target` ("host:port").
 * @param {string} netns @param {string} target
 * @returns {Promise<{port: number, stop: () => Promise<void>}>}
 */
export async function startForwarder(netns, target) {
  const proc = spawn('ip', ['netns', 'exec', netns, process.execPath, SELF, target], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`forwarder in ${netns}: no READY within 10 s`)), 10_000);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`forwarder in ${netns} exited (${code}) before READY`));
    });
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = /^READY (\d+)$/.exec(line);
      if (!m) return;
      clearTimeout(timer);
      resolve(Number(m[1]));
    });
  }).catch((err) => {
    proc.kill('SIGKILL');
    throw err;
  });
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  };
  return { port, stop };
}

if (process.argv[1] === SELF) {
  const target = process.argv[2] ?? '';
  const at = target.lastIndexOf(':');
  const host = target.slice(0, at);
  const port = Number(target.slice(at + 1));
  if (at < 1 || !Number.isInteger(port)) {
    console.error(`usage: node forward.js HOST:PORT (got ${JSON.stringify(target)})`);
    process.exit(2);
  }
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  // Our stdin is a pipe from the test: when the test dies, so does the forwarder.
  process.stdin.on('end', () => process.exit(0)).resume();
  server.listen(0, '127.0.0.1', () => console.log(`READY ${/** @type {net.AddressInfo} */ (server.address()).port}`));
}
