// The harness: a private redis-server on a free loopback port and a real `wasmq run` host
// serving the queues the tests run jobs on. Needs WASMQ_BIN (the wasmq binary) and
// WASMQ_RUST_GUESTS (guest-examples/rust/target/wasm32-wasip2/release); scripts/test.sh sets
// both, and WASMQ_JS_GUESTS (guest-examples/javascript/out) for the cross-language test.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { Redis } from "ioredis";

export const REPO = fileURLToPath(new URL("../../../", import.meta.url));

export function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the suite with scripts/test.sh (see test/support.js)`);
  return value;
}

// redis 7.0 has no `--port 0`: take a port the kernel gives, then free it for the server.
// A cluster node also listens on its port + 10000 (the cluster bus), hence `below`.
export async function freePort(below = 65536) {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const server = createServer();
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address();
        server.close(() => resolve(port));
      });
      server.on("error", reject);
    });
    if (port < below) return port;
  }
}

export async function eventually(what, probe, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null && value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", resolve);
  });
}

export async function startRedis(extra = []) {
  if (spawnSync("redis-server", ["--version"]).error) {
    throw new Error("redis-server is missing: bash scripts/install-deps.sh");
  }
  const port = await freePort(extra.includes("--cluster-enabled") ? 55536 : 65536);
  const dir = mkdtempSync(join(tmpdir(), "wasmq-sdk-redis-"));
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "",
    "--appendonly", "no", "--dir", dir, ...extra], { stdio: "ignore" });
  const probe = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  await eventually("redis-server to answer", async () => {
    try {
      await probe.connect();
      return (await probe.ping()) === "PONG";
    } catch {
      probe.disconnect();
      return false;
    }
  }, 10000);
  probe.disconnect();
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    async stop() {
      child.kill("SIGTERM");
      await exited(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function rustGuest(name) {
  const path = join(need("WASMQ_RUST_GUESTS"), `${name.replaceAll("-", "_")}.wasm`);
  if (!existsSync(path)) throw new Error(`${path} is missing: bash guest-examples/rust/build.sh`);
  return `${name}=${path}`;
}

export function jsGuest(name, as = name) {
  const path = join(need("WASMQ_JS_GUESTS"), `${name}.wasm`);
  if (!existsSync(path)) throw new Error(`${path} is missing: bash guest-examples/javascript/build.sh`);
  return `${as}=${path}`;
}

/** A `wasmq run` process serving `queues` with `handlers` (`name=path.wasm`). */
export function startHost(url, queues, handlers) {
  const dir = mkdtempSync(join(tmpdir(), "wasmq-sdk-host-"));
  const args = ["run", "--redis", url, "--queues", queues.join(","), "--concurrency", "4"];
  for (const handler of handlers) args.push("--handler", handler);
  const log = openSync(join(dir, "host.log"), "w");
  const child = spawn(need("WASMQ_BIN"), args, { stdio: ["ignore", "ignore", log], env: { ...process.env, RUST_LOG: "info" } });
  return {
    log: join(dir, "host.log"),
    async stop() {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 30000);
      await exited(child);
      clearTimeout(killer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A private 3-primary Redis Cluster on loopback ports; `url` is its `redis+cluster://` URL. */
export async function startCluster() {
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    nodes.push(await startRedis(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"]));
  }
  const created = spawnSync("redis-cli", ["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", "0", "--cluster-yes"]);
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stderr}`);
  for (const node of nodes) {
    const conn = new Redis(node.port, "127.0.0.1");
    await eventually("the cluster to form", async () => (await conn.cluster("INFO")).includes("cluster_state:ok"), 30000);
    conn.disconnect();
  }
  return {
    url: `redis+cluster://${nodes.slice(0, 2).map((n) => `127.0.0.1:${n.port}`).join(",")}`,
    async stop() {
      for (const node of nodes) await node.stop();
    },
  };
}
