// Manifest and sha256 checks: a good bundle opens; a changed, truncated or missing file is a one-line error
// naming it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { BundleError, openBundle } from "../src/bundle.js";
import { dirSource, goldenPath, onnxBundles } from "./goldens.mjs";

const dir = goldenPath(onnxBundles[0].dir, "bundles");
const bytes = (name) => new Uint8Array(readFileSync(join(dir, name)));

async function rejects(replaced, pattern) {
  await assert.rejects(openBundle(dirSource(dir, replaced)), (e) => {
    assert.ok(e instanceof BundleError, e.stack);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("\n"), "one line");
    return true;
  });
}

test("a good bundle opens with every listed file checked", async () => {
  const b = await openBundle(dirSource(dir));
  assert.deepEqual([...b.files.keys()].sort(), Object.keys(b.manifest.files).sort());
});

test("a modified file is named", async () => {
  const tok = bytes("tokenizer.json");
  tok[10] ^= 1;
  await rejects({ "tokenizer.json": tok }, /^tokenizer\.json: sha256 differs from manifest\.json/);
});

test("a truncated file is named", async () => {
  const w = bytes("decoder.onnx");
  await rejects({ "decoder.onnx": w.subarray(0, w.length - 1) }, /^decoder\.onnx: size \d+ differs from manifest\.json/);
});

test("a manifest without a required field is named", async () => {
  const m = JSON.parse(new TextDecoder().decode(bytes("manifest.json")));
  delete m.runtime;
  await rejects({ "manifest.json": new TextEncoder().encode(JSON.stringify(m)) }, /^manifest\.json: manifest lacks "runtime"/);
});

test("a non-ONNX bundle is refused", async () => {
  const m = JSON.parse(new TextDecoder().decode(bytes("manifest.json")));
  m.format = "gguf";
  await rejects({ "manifest.json": new TextEncoder().encode(JSON.stringify(m)) }, /this page runs ONNX bundles/);
});

test("a manifest that is not JSON is named", async () => {
  await rejects({ "manifest.json": new TextEncoder().encode("{") }, /^manifest\.json: not valid JSON/);
});

const edited = (edit) => {
  const m = JSON.parse(new TextDecoder().decode(bytes("manifest.json")));
  edit(m);
  return { "manifest.json": new TextEncoder().encode(JSON.stringify(m)) };
};

test("an unknown spec_version major is refused before anything else", async () => {
  await rejects(edited((m) => { m.spec_version = "2.0"; delete m.format; }), /^manifest\.json: spec_version "2\.0" is not one this page reads/);
});

test("a listed name outside the bundle is refused before any file is read", async () => {
  for (const name of ["../secret", "/etc/passwd", "a//b", "C:x", "a\\b"]) {
    await rejects(edited((m) => { m.files[name] = { sha256: "0", bytes: 1 }; }), /^manifest\.json: file name .* (leaves the bundle|absolute|relative path)/);
  }
});
