// The type declarations compile against a usage file (test/typed_usage.ts) with TypeScript
// (pinned in package.json's devDependencies), strict, refusing the wrong uses it marks.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

test("the declarations type-check what the README shows and refuse wrong uses", () => {
  const tsc = fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url));
  const config = fileURLToPath(new URL("./tsconfig.json", import.meta.url));
  const run = spawnSync(process.execPath, [tsc, "-p", config], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stdout + run.stderr);
});
