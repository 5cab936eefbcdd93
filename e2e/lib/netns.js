// A small internet in network namespaces, for the symmetric-NAT test: one namespace is
// "the internet" (switchboard on 198.18.0.1, routing between the NATs), and each side has
// a NAT router (iptables MASQUERADE --random-fully: a new public port per destination,
// the symmetric kind that defeats hole punching) with one host behind it.
//
//   host-a 10.203.1.2 ─ nat-a 10.203.1.1 | 198.18.1.2 ─┐
//                                                       inet 198.18.1.1, 198.18.2.1, server 198.18.0.1
//   host-b 10.203.2.2 ─ nat-b 10.203.2.1 | 198.18.2.2 ─┘
//
// Every address lives only inside namespaces made here (198.18.0.0/15 is the
// benchmarking range, 10.203.0.0/16 a private one); nothing touches the root namespace's
// interfaces, routes or rules, and deleting the namespaces removes all of it.
import { execFileSync } from 'node:child_process';

const PREFIX = 'sbnat';

/** @param {string[]} args */
function ip(...args) {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).toString();
}

/** Runs `cmd` inside namespace `ns`. @param {string} ns @param {string[]} cmd */
export function inNs(ns, ...cmd) {
  return ip('netns', 'exec', ns, ...cmd);
}

/** Why the test cannot run here, or null when it can (root, able to make a namespace). */
export function unsupported() {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'needs root: it builds network namespaces and NAT rules (ip netns, iptables); run the suite as root (CI does)';
  const probe = `${PREFIX}-${process.pid}-probe`;
  try {
    ip('netns', 'add', probe);
  } catch (err) {
    return `root, but cannot create a network namespace here (no CAP_NET_ADMIN?): ${String(err.stderr ?? err).trim()}`;
  } finally {
    try {
      ip('netns', 'del', probe);
    } catch {
      // Never made.
    }
  }
  return null;
}

/**
 * Kills what still runs inside a namespace of the lab (a server or browser of a run that
 * was interrupted): only processes the lab's own runs started live there.
 * @param {string} n
 */
function killInside(n) {
  let pids = [];
  try {
    pids = ip('netns', 'pids', n).split('\n').filter(Boolean).map(Number);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Exited meanwhile.
    }
  }
}

/** Namespaces left by runs whose process is gone (killed before their cleanup ran). */
function removeStale() {
  for (const line of ip('netns', 'list').split('\n')) {
    const m = /^(sbnat-(\d+)-\S+)/.exec(line);
    if (!m) continue;
    try {
      process.kill(Number(m[2]), 0);
      continue; // Its run is still going (another test process).
    } catch {
      // Dead: its namespaces are ours to remove.
    }
    killInside(m[1]);
    try {
      ip('netns', 'del', m[1]);
    } catch {
      // Gone meanwhile.
    }
  }
}

/**
 * Builds the topology. Returns the namespace names, the server's address and cleanup(),
 * which is idempotent and also runs at process exit.
 */
export function buildNatLab() {
  removeStale();
  const tag = `${PREFIX}-${process.pid}`;
  const ns = { inet: `${tag}-inet`, natA: `${tag}-nat-a`, natB: `${tag}-nat-b`, hostA: `${tag}-host-a`, hostB: `${tag}-host-b` };
  const made = [];
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    process.off('exit', cleanup);
    for (const n of [ns.natA, ns.natB]) {
      if (!made.includes(n)) continue;
      // The rules die with the namespace anyway; flushing first says so out loud.
      for (const table of ['nat', 'filter']) {
        try {
          inNs(n, 'iptables', '-t', table, '-F');
        } catch {
          // Namespace already half gone.
        }
      }
    }
    for (const n of made.reverse()) {
      killInside(n);
      try {
        ip('netns', 'del', n);
      } catch {
        // Already gone.
      }
    }
  };
  process.on('exit', cleanup);
  // A run stopped by a signal cleans up too, then dies of that signal as it would have.
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, () => {
      cleanup();
      process.kill(process.pid, sig);
    });
  }
  try {
    for (const n of Object.values(ns)) {
      ip('netns', 'add', n);
      made.push(n);
      ip('-n', n, 'link', 'set', 'lo', 'up');
    }
    // The internet: the server's address on its loopback, one link to each NAT, and
    // forwarding between them, so that a direct path is really tried (and refused by the
    // NATs), not missing for want of a route.
    ip('-n', ns.inet, 'addr', 'add', '198.18.0.1/32', 'dev', 'lo');
    inNs(ns.inet, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    const side = (nat, host, n) => {
      ip('-n', ns.inet, 'link', 'add', `to-${n}`, 'type', 'veth', 'peer', 'name', 'wan', 'netns', nat);
      ip('-n', ns.inet, 'addr', 'add', `198.18.${n === 'a' ? 1 : 2}.1/24`, 'dev', `to-${n}`);
      ip('-n', ns.inet, 'link', 'set', `to-${n}`, 'up');
      const i = n === 'a' ? 1 : 2;
      ip('-n', nat, 'addr', 'add', `198.18.${i}.2/24`, 'dev', 'wan');
      ip('-n', nat, 'link', 'set', 'wan', 'up');
      ip('-n', nat, 'route', 'add', 'default', 'via', `198.18.${i}.1`);
      ip('-n', nat, 'link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host);
      ip('-n', nat, 'addr', 'add', `10.203.${i}.1/24`, 'dev', 'lan');
      ip('-n', nat, 'link', 'set', 'lan', 'up');
      ip('-n', host, 'addr', 'add', `10.203.${i}.2/24`, 'dev', 'eth0');
      ip('-n', host, 'link', 'set', 'eth0', 'up');
      ip('-n', host, 'route', 'add', 'default', 'via', `10.203.${i}.1`);
      inNs(nat, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
      // Symmetric NAT: every new destination gets a fresh, random public port...
      inNs(nat, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan', '-j', 'MASQUERADE', '--random-fully');
      // ...and only replies to what went out come back in.
      inNs(nat, 'iptables', '-A', 'FORWARD', '-i', 'wan', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
      inNs(nat, 'iptables', '-A', 'FORWARD', '-i', 'wan', '-j', 'DROP');
    };
    side(ns.natA, ns.hostA, 'a');
    side(ns.natB, ns.hostB, 'b');
  } catch (err) {
    cleanup();
    throw err;
  }
  /**
   * Turns both NATs into plain routers (rules flushed, the internet given routes to the
   * hosts), for the check that the lab carries a direct call at all. Not undone.
   */
  const disableNat = () => {
    for (const nat of [ns.natA, ns.natB]) for (const table of ['nat', 'filter']) inNs(nat, 'iptables', '-t', table, '-F');
    ip('-n', ns.inet, 'route', 'add', '10.203.1.0/24', 'via', '198.18.1.2');
    ip('-n', ns.inet, 'route', 'add', '10.203.2.0/24', 'via', '198.18.2.2');
  };
  return { ns, serverIp: '198.18.0.1', natIps: ['198.18.1.2', '198.18.2.2'], hostIps: ['10.203.1.2', '10.203.2.2'], disableNat, cleanup };
}
