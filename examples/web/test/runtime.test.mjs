// The three graphs in onnxruntime-web (wasm, in Node) against Python onnxruntime on the golden answers.
// fp32: greedy ids identical, first-step logits and image embeddings within float32 reordering noise.
// int4: MatMulNBits differs by design between the two (see INT4 below), so answers are compared with a
// stated tolerance and the agreement is reported.
import assert from "node:assert/strict";
import { test } from "node:test";
import { OnnxBundleRuntime, configureWasm } from "../src/runtime.js";
import { bundleOf, goldenPath, onnxBundles } from "./goldens.mjs";
import { readPng } from "./png.mjs";

configureWasm({ threads: 1 });

// fp32: onnxruntime's x86 and wasm kernels sum in different orders: ~1e-6 relative per matmul, measured
// up to ~5e-4 relative on logits after the whole model.
const FP32 = { logitAbs: 2e-3, embedRel: 1e-4 };
// int4 with accuracy_level 4: the x86 MatMulNBits kernel quantizes activations to int8 per block, the wasm
// kernel multiplies in float32, so logits differ by a few hundredths and near-tied answers may flip.
// Tolerance: at least INT4.answers of the golden answers identical, the first token identical wherever
// Python's top-2 margin exceeds INT4.margin, and first-step logits within INT4.logitAbs.
export const INT4 = { answers: 0.9, margin: 0.25, logitAbs: 0.25 };

const runtimes = new Map();
async function runtimeOf(entry) {
  if (!runtimes.has(entry.dir)) runtimes.set(entry.dir, bundleOf(entry).then((b) => OnnxBundleRuntime.create(b)));
  return runtimes.get(entry.dir);
}

const images = new Map();
async function encoded(rt, entry) {
  const key = `${entry.dir}|${entry.image}`;
  if (!images.has(key)) {
    const { rgb, width, height } = readPng(goldenPath(entry.image, "images"));
    images.set(key, rt.encodeImage(rgb, width, height));
  }
  return images.get(key);
}

/** The first step's logits for an entry (prefill only). */
async function firstLogits(rt, image, question) {
  const { embeds, length } = await rt.promptEmbeds(image, rt.promptIds(question));
  rt.past = rt.pastNames.map(() => rt.emptyPast());
  return rt.step(embeds, length, image.dim);
}

function checkEmbeds(image, want, rel) {
  assert.deepEqual([image.n, image.dim], want.shape);
  const sum = image.embeds.reduce((s, v) => s + v, 0);
  const scale = image.embeds.reduce((s, v) => s + Math.abs(v), 0);
  assert.ok(Math.abs(sum - want.sum) <= rel * scale, `image_embeds sum ${sum} vs ${want.sum}`);
}

for (const entry of onnxBundles.filter((e) => e.quant === "fp32")) {
  test(`fp32 greedy ids equal Python's: ${entry.image} ${JSON.stringify(entry.question)}`, async () => {
    const rt = await runtimeOf(entry);
    const image = await encoded(rt, entry);
    checkEmbeds(image, entry.image_embeds, FP32.embedRel);
    for (const [i, j, v] of entry.image_embeds.samples) {
      assert.ok(Math.abs(image.embeds[i * image.dim + j] - v) <= 1e-3 * (1 + Math.abs(v)), `image_embeds[${i}, ${j}]`);
    }
    const logits = await firstLogits(rt, image, entry.question);
    for (const [id, v] of entry.top5) assert.ok(Math.abs(logits[id] - v) <= FP32.logitAbs, `logit ${id}: ${logits[id]} vs ${v}`);
    const { ids, text } = await rt.generate(image, entry.question, { maxNewTokens: entry.greedy_ids.length });
    assert.deepEqual(ids, entry.greedy_ids);
    assert.equal(text, entry.text.trim()); // vectors.json keeps the raw decode; an answer is stripped
  });
}

const int4 = onnxBundles.filter((e) => e.quant === "int4");
if (int4.length) {
  test(`int4 answers agree with Python's within the stated tolerance (${int4.length} answers)`, async (t) => {
    let same = 0, worst = 0;
    for (const entry of int4) {
      const rt = await runtimeOf(entry);
      const image = await encoded(rt, entry);
      const logits = await firstLogits(rt, image, entry.question);
      for (const [id, v] of entry.top5) worst = Math.max(worst, Math.abs(logits[id] - v));
      const margin = entry.top5[0][1] - entry.top5[1][1];
      const { ids } = await rt.generate(image, entry.question, { maxNewTokens: entry.greedy_ids.length });
      if (margin > INT4.margin) assert.equal(ids[0], entry.greedy_ids[0], `first token of ${JSON.stringify(entry.question)} (margin ${margin.toFixed(3)})`);
      same += JSON.stringify(ids) === JSON.stringify(entry.greedy_ids);
    }
    t.diagnostic(`int4 agreement: ${same}/${int4.length} answers identical to Python's; first-step top-5 logits differ by at most ${worst.toFixed(4)}`);
    assert.ok(worst <= INT4.logitAbs, `logits differ by ${worst}`);
    assert.ok(same >= INT4.answers * int4.length, `${same}/${int4.length} answers identical`);
  });
}

test("a graph whose inputs differ from the manifest's is a one-line error naming the graph", async () => {
  const { manifest, files } = await bundleOf(onnxBundles[0]);
  const m = structuredClone(manifest);
  m.runtime.graphs.decoder.inputs.position_ids[0] = "int32";
  await assert.rejects(OnnxBundleRuntime.create({ manifest: m, files }), (e) => (assert.match(e.message,
    /^decoder\.onnx: input "position_ids" is \["int64",\["batch","sequence"\]\], manifest\.json says \["int32",\["batch","sequence"\]\]$/), true));
});

test("a question with a second image marker is refused, never run with a -200 id", async () => {
  const entry = onnxBundles[0];
  const rt = await runtimeOf(entry);
  const image = await encoded(rt, entry);
  await assert.rejects(rt.generate(image, "<image> and <image>?"), { message: "a prompt needs exactly one image placeholder <image>, got 2" });
});
