// Preprocessing against Python's (PIL bicubic resize, float32 normalisation): bit for bit.
import assert from "node:assert/strict";
import { test } from "node:test";
import { preprocess, resizeBicubic } from "../src/image.js";
import { sha256Hex } from "../src/bundle.js";
import { bundleOf, goldenPath, onnxBundles, vectors } from "./goldens.mjs";
import { readPng } from "./png.mjs";

const spec = async () => (await bundleOf(onnxBundles[0])).manifest.image;

for (const im of vectors.images) {
  test(`resized pixels equal Pillow's: ${im.file}`, async () => {
    const { rgb, width, height } = readPng(goldenPath(im.file, "images"));
    const { size } = await spec();
    const { resized } = preprocess(rgb, width, height, { ...(await spec()), size: im.size ?? size });
    for (const [y, x, c, v] of im.resized_samples) assert.equal(resized[(y * (im.size ?? size) + x) * 3 + c], v, `pixel (${y}, ${x}, ${c})`);
    assert.equal(await sha256Hex(resized), im.resized_sha256);
  });

  test(`pixel_values equal Python's float32 bytes: ${im.file}`, async () => {
    const { rgb, width, height } = readPng(goldenPath(im.file, "images"));
    const s = await spec();
    const size = im.size ?? s.size;
    const { pixels } = preprocess(rgb, width, height, { ...s, size });
    for (const [c, y, x, v] of im.pixel_values_samples) assert.equal(pixels[(c * size + y) * size + x], Math.fround(v), `pixel_values[${c}, ${y}, ${x}]`);
    assert.equal(await sha256Hex(new Uint8Array(pixels.buffer)), im.pixel_values_sha256); // little-endian hosts
  });
}

test("an image already at the model's size is not resized", () => {
  const rgb = Uint8Array.from({ length: 4 * 4 * 3 }, (_, i) => (i * 37) % 256);
  const { resized } = preprocess(rgb, 4, 4, { size: 4, mean: [0, 0, 0], std: [1, 1, 1], rescale: 1 / 255, resize: "bicubic" });
  assert.deepEqual(resized, rgb);
});

test("a constant image stays constant through the resize (weights sum to one)", () => {
  for (const [w, h, out] of [[7, 5, 3], [3, 3, 11], [640, 480, 64]]) {
    const resized = resizeBicubic(new Uint8Array(w * h * 3).fill(200), w, h, out, out);
    assert.ok(resized.every((v) => v === 200), `${w}x${h} → ${out}`);
  }
});
