// Opening an edgevlm ONNX bundle as docs/bundle-spec.md (section 2) orders it: manifest.json a JSON object,
// its spec_version one this page reads, every listed name a relative path inside the bundle (checked before any
// file is fetched), the fields this page uses present, then every listed file's byte count and sha256
// (crypto.subtle) before anything runs, so a truncated or replaced file is a one-line error naming it. (The
// spec's JSON Schema check is the Python reader's; this page checks the fields it reads.)
// A bundle is read through a `source`: async (relative path) → Uint8Array, so the same code serves a URL
// next to the page (fetchSource), a directory the user picked (filesSource) and Node tests (a fs reader).

export const MANIFEST = "manifest.json";
const REQUIRED = ["format", "files", "image", "prompt", "max_context", "runtime"];
export const READS = ["0", "1"]; // spec_version majors: 0 = written before the spec (no field), 1 = 1.x

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

/** A listed name must be a relative path that stays inside the bundle (spec section 2, rule 3). */
function checkName(name) {
  const bad = (why) => new BundleError(`file name ${JSON.stringify(name)} ${why}`, MANIFEST);
  if (!name || name.includes("\\") || name.includes("\0")) throw bad("is not a relative path with / separators");
  if (name.startsWith("/") || /^[A-Za-z]:/.test(name)) throw bad("is an absolute path: a bundle names files inside itself");
  if (name.split("/").some((part) => part === "" || part === "." || part === "..")) {
    throw bad("leaves the bundle or is not normalized ('..', '.', '//')");
  }
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
  if (typeof manifest !== "object" || manifest === null || Array.isArray(manifest)) {
    throw new BundleError("not a manifest: the top level is not a JSON object", MANIFEST);
  }
  const version = manifest.spec_version ?? "0";
  if (typeof version !== "string" || !READS.includes(version.split(".")[0])) {
    throw new BundleError(`spec_version ${JSON.stringify(version)} is not one this page reads (0, 1.x)`, MANIFEST);
  }
  if (typeof manifest.files === "object" && manifest.files !== null) Object.keys(manifest.files).forEach(checkName);
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
