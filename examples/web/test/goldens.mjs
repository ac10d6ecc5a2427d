// The golden vectors the node tests read: `vectors.json` in $EDGEVLM_GOLDENS (tests/test_web.py points it at
// the fixture it builds) or in the repository's tests/goldens/. Paths in it are relative to that directory.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { openBundle } from "../src/bundle.js";
import { dirSource } from "./dir-source.mjs";

export { dirSource };

const here = dirname(fileURLToPath(import.meta.url));
export const GOLDENS = resolve(process.env.EDGEVLM_GOLDENS ?? join(here, "..", "..", "..", "tests", "goldens"));
export const vectors = JSON.parse(readFileSync(join(GOLDENS, "vectors.json"), "utf8"));

/** A path from vectors.json: relative to the goldens dir, or to its `sub` dir (images/, bundles/). */
export function goldenPath(rel, sub) {
  for (const p of [join(GOLDENS, rel), join(GOLDENS, sub, rel)]) if (existsSync(p)) return p;
  throw new Error(`golden file ${rel} not found under ${GOLDENS}`);
}

export const onnxBundles = vectors.bundles.filter((b) => b.format === "onnx");

const opened = new Map();
/** The opened (checked) bundle of a vectors.json bundle entry, opened once per test file. */
export async function bundleOf(entry) {
  const dir = goldenPath(entry.dir, "bundles");
  if (!opened.has(dir)) opened.set(dir, openBundle(dirSource(dir)));
  return opened.get(dir);
}
