// Opening an edgevlm ONNX bundle: manifest.json, then every file it lists checked for its byte count and
// sha256 (crypto.subtle) before anything runs, so a truncated or replaced file is a one-line error naming it.
// A bundle is read through a `source`: async (relative path) → Uint8Array, so the same code serves a URL
// next to the page (fetchSource), a directory the user picked (filesSource) and Node tests (a fs reader).

export const MANIFEST = "manifest.json";
const REQUIRED = ["format", "files", "image", "prompt", "max_context", "runtime"];

/** A bad bundle or input: `message` is one line naming the file when there is one. */
export class BundleError extends Error {
  constructor(message, file) {
    super(file ? `${file}: ${message}` : message);
    this.name = "BundleError";
  }
}

/** Files served under a base URL (fetch). */
export function fetchSource(baseUrl) {
  const base = new URL(baseUrl.endsWith("/") ? baseUrl : baseUrl + "/", globalThis.location?.href);
  return async (name) => {
    const res = await fetch(new URL(name, base));
    if (!res.ok) throw new BundleError(`cannot fetch (HTTP ${res.status})`, name);
    return new Uint8Array(await res.arrayBuffer());
  };
}

/** Files from an <input type=file webkitdirectory> pick: paths relative to the picked directory. */
export function filesSource(fileList) {
  const byPath = new Map();
  for (const f of fileList) {
    const rel = (f.webkitRelativePath || f.name).split("/");
    byPath.set(rel.length > 1 ? rel.slice(1).join("/") : rel[0], f); // drop the picked directory's own name
  }
  return async (name) => {
    const f = byPath.get(name);
    if (!f) throw new BundleError("missing from the picked directory", name);
    return new Uint8Array(await f.arrayBuffer());
  };
}

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Read and check a bundle: { manifest, files: Map(name → Uint8Array) } with every listed file verified.
 * `onProgress(name, i, n)` is called as files are checked.
 */
export async function openBundle(source, { onProgress } = {}) {
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(await source(MANIFEST)));
  } catch (e) {
    throw e instanceof BundleError ? e : new BundleError(`not valid JSON (${e.message})`, MANIFEST);
  }
  for (const key of REQUIRED) {
    if (!(key in manifest)) throw new BundleError(`manifest lacks ${JSON.stringify(key)}`, MANIFEST);
  }
  if (manifest.format !== "onnx") {
    throw new BundleError(`format is ${JSON.stringify(manifest.format)}; this page runs ONNX bundles`, MANIFEST);
  }
  for (const key of ["graphs", "kv_cache"]) {
    if (!(key in manifest.runtime)) throw new BundleError(`manifest runtime section lacks ${JSON.stringify(key)}`, MANIFEST);
  }
  const names = Object.keys(manifest.files);
  if (!names.includes("tokenizer.json")) throw new BundleError("manifest lists no tokenizer.json", MANIFEST);
  const files = new Map();
  for (const [i, name] of names.entries()) {
    onProgress?.(name, i, names.length);
    const want = manifest.files[name];
    const bytes = await source(name);
    if (bytes.length !== want.bytes) {
      throw new BundleError(`size ${bytes.length} differs from manifest.json (${want.bytes} bytes): truncated or replaced`, name);
    }
    if ((await sha256Hex(bytes)) !== want.sha256) {
      throw new BundleError("sha256 differs from manifest.json: the file was modified", name);
    }
    files.set(name, bytes);
  }
  return { manifest, files };
}
