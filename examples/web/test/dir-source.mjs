// A bundle source (src/bundle.js) over a local directory, for Node: optionally with some files' bytes replaced.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export function dirSource(dir, replaced = {}) {
  return async (name) => {
    if (name in replaced) return replaced[name];
    const p = join(dir, name);
    if (!existsSync(p)) throw new Error(`${name}: missing`);
    return new Uint8Array(readFileSync(p));
  };
}
