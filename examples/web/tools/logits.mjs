// The first decoding step's logits of a bundle in onnxruntime-web (wasm, in Node): the numbers
// benchmarks/web_bench.py compares with Python onnxruntime's, per MatMulNBits accuracy level.
//
//   node tools/logits.mjs BUNDLE_DIR IMAGE.png "question"   → JSON array of the vocabulary's logits
import { openBundle } from "../src/bundle.js";
import { OnnxBundleRuntime, configureWasm } from "../src/runtime.js";
import { dirSource } from "../test/dir-source.mjs";
import { readPng } from "../test/png.mjs";

const [dir, png, question] = process.argv.slice(2);
configureWasm({ threads: 1 });
const rt = await OnnxBundleRuntime.create(await openBundle(dirSource(dir)));
const { rgb, width, height } = readPng(png);
const image = await rt.encodeImage(rgb, width, height);
const { embeds, length } = await rt.promptEmbeds(image, rt.promptIds(question));
rt.past = rt.pastNames.map(() => rt.emptyPast());
process.stdout.write(JSON.stringify(Array.from(await rt.step(embeds, length, image.dim))) + "\n");
