// Tokenizer and prompt against Python's ids (tokenizers' Rust encoder, Template.prompt, encode_prompt) and refusals.
import assert from "node:assert/strict";
import { test } from "node:test";
import { IMAGE_TOKEN, renderPrompt, splitAtImage } from "../src/prompt.js";
import { TextTokenizer } from "../src/tokenizer.js";
import { OnnxBundleRuntime } from "../src/runtime.js";
import { bundleOf, onnxBundles, vectors } from "./goldens.mjs";

const bundle = () => bundleOf(onnxBundles[0]);

test("text ids equal Python's", async () => {
  const b = await bundle();
  const tok = new TextTokenizer(b.files, b.manifest.prompt);
  for (const { text, ids } of vectors.text) assert.deepEqual(tok.encode(text), ids, JSON.stringify(text));
});

test("decoding gives Python's text back", async () => {
  const b = await bundle();
  const tok = new TextTokenizer(b.files, b.manifest.prompt);
  const { bos_id, eos_id, pad_id } = b.manifest.prompt;
  // texts that spell special tokens decode without them (as in Python): only the others round-trip
  const plain = vectors.text.filter(({ ids }) => !ids.some((i) => [bos_id, eos_id, pad_id].includes(i)));
  assert.ok(plain.length >= vectors.text.length - 1);
  for (const { text, ids } of plain) assert.equal(tok.decode(ids), text.trim(), JSON.stringify(text));
});

test("prompt text and ids equal Python's, image placeholder included", async () => {
  const b = await bundle();
  const rt = new OnnxBundleRuntime(b); // no sessions needed for the prompt
  for (const p of vectors.prompts) {
    assert.equal(renderPrompt(b.manifest.prompt.template, p.question, b.manifest.prompt.image_placeholder), p.prompt);
    assert.deepEqual(rt.promptIds(p.question), p.ids, JSON.stringify(p.question));
    assert.equal(p.ids.filter((i) => i === IMAGE_TOKEN).length, 1);
  }
});

test("image_last templates move the image after the question", () => {
  const tpl = { system: "", user: "USER: ", assistant: " ASSISTANT:", image_last: true };
  assert.equal(renderPrompt(tpl, "<image>\nWhat color? "), "USER: What color?\n<image> ASSISTANT:");
  assert.equal(renderPrompt({ ...tpl, image_last: false }, "What color?"), "USER: <image>\nWhat color? ASSISTANT:");
});

test("prompts are refused as Python refuses them (docs/bundle-spec.md section 6), with its messages", async () => {
  const b = await bundle();
  const rt = new OnnxBundleRuntime(b);
  const refused = (question, message) => assert.throws(() => splitAtImage(rt.promptIds(question)), { name: "BundleError", message }, question);
  refused("What is </s> in the top left?", "the prompt contains the tokenizer's special token text </s>");
  refused("<pad> then <s> and </s>, <pad>?", "the prompt contains the tokenizer's special token text <s> </s> <pad>"); // by id, once
  refused("caf\uD800?", "the prompt is not valid UTF-8"); // a lone surrogate: no UTF-8 encoding
  refused("<image> and <image>?", "a prompt needs exactly one image placeholder <image>, got 2");
  assert.equal(splitAtImage(rt.promptIds("What is </ s> here?")).length, 2); // near misses are plain text
});
