// The page: pick or fetch a bundle, pick an image, ask; the answer streams in with its timings.
// All model work is in the DOM-free core (bundle.js, image.js, prompt.js, tokenizer.js, runtime.js); this
// file only wires it to the page. State for automation: body[data-state] is "loading", "ready", "answering",
// "done" or "error", and window.edgevlm holds the last result and the last model input (the browser test reads
// them).

import { fetchSource, filesSource, openBundle } from "./bundle.js";
import { rgbaToRgb } from "./image.js";
import { splitAtImage } from "./prompt.js";
import { MAX_NEW_TOKENS, OnnxBundleRuntime, configureWasm } from "./runtime.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const threads = Number(params.get("threads")) || (crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
configureWasm({ threads });

const state = { runtime: null, image: null }; // image: { rgb, width, height, name }
window.edgevlm = { last: null, bench, maxNewTokens: Number(params.get("max_new_tokens")) || undefined };

function setState(s) {
  document.body.dataset.state = s;
}

function status(message, error = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", error);
  if (error) setState("error");
}

function fail(e) {
  console.error(e);
  status(String(e?.message ?? e).split("\n")[0], true); // one line: the core's errors name the file
  updateAsk();
}

function updateAsk() {
  $("ask").disabled = !(state.runtime && state.image);
}

async function loadBundle(source, label) {
  setState("loading");
  state.runtime = null;
  updateAsk();
  $("bundle-info").textContent = "";
  try {
    const bundle = await openBundle(source, { onProgress: (name, i, n) => status(`${label}: checking ${name} (${i + 1}/${n})…`) });
    status(`${label}: creating onnxruntime-web sessions…`);
    state.runtime = await OnnxBundleRuntime.create(bundle);
    const m = bundle.manifest;
    const mb = Object.values(m.files).reduce((s, f) => s + f.bytes, 0) / 1e6;
    $("bundle-info").textContent = `${label}: ${m.format} ${m.quantization?.name ?? ""}, ${m.family ?? ""}, ` +
      `${m.image.size}px → ${m.prompt.image_tokens} image tokens, ${Object.keys(m.files).length} files (${mb.toFixed(1)} MB), sha256 checked`;
    status("Bundle ready.");
    setState("ready");
  } catch (e) {
    fail(e);
  }
  updateAsk();
}

/**
 * Decode an image file to RGB at its own size: no scaling, no colour management (the resize is ours), upright:
 * an EXIF orientation is applied, as Python's load_image (Pillow's exif_transpose) does (docs/bundle-spec.md 4).
 */
async function decodeImage(file) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = $("preview");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" }).data;
  return { rgb: rgbaToRgb(rgba), width: bitmap.width, height: bitmap.height, name: file.name };
}

function showModelInput(resized, size, from) {
  const canvas = $("model-input");
  canvas.width = canvas.height = size;
  const img = new ImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    img.data.set(resized.subarray(3 * i, 3 * i + 3), 4 * i);
    img.data[4 * i + 3] = 255;
  }
  canvas.getContext("2d").putImageData(img, 0, 0);
  $("model-input-caption").textContent = from.width === size && from.height === size
    ? `model input ${size}×${size} (as picked)` : `model input ${size}×${size} (bicubic from ${from.width}×${from.height})`;
}

/** Let the page paint while decoding, at most every 100 ms (each yield costs a task turn). */
let lastPaint = 0;
async function maybePaint() {
  if (performance.now() - lastPaint < 100) return;
  await new Promise((r) => setTimeout(r, 0));
  lastPaint = performance.now();
}

async function ask() {
  const rt = state.runtime, im = state.image;
  const question = $("question").value;
  setState("answering");
  $("ask").disabled = true;
  $("answer").textContent = "";
  for (const id of ["stat-image", "stat-ttft", "stat-decode", "stat-prompt"]) $(id).textContent = "…";
  status("Encoding the image…");
  try {
    splitAtImage(rt.promptIds(question)); // a refused question (special token text, not one <image>) fails first
    await new Promise((r) => setTimeout(r, 0));
    const t0 = performance.now();
    const image = await rt.encodeImage(im.rgb, im.width, im.height);
    const imageMs = performance.now() - t0;
    window.edgevlm.input = { resized: image.resized, pixels: image.pixels }; // the model's input (browser test)
    showModelInput(image.resized, rt.manifest.image.size, im);
    $("stat-image").textContent = `${imageMs.toFixed(1)} ms`;
    status("Answering…");
    lastPaint = performance.now();
    const result = await rt.generate(image, question, {
      maxNewTokens: window.edgevlm.maxNewTokens ?? MAX_NEW_TOKENS,
      onToken: async (ids, text) => {
        $("answer").textContent = text;
        await maybePaint();
      },
    });
    const t = result.timing;
    const ttft = imageMs + t.prefillMs;
    const tokS = t.decodeTokens ? (t.decodeTokens / t.decodeMs) * 1e3 : NaN;
    $("answer").textContent = result.text || "(empty answer)";
    $("stat-ttft").textContent = `${ttft.toFixed(1)} ms`;
    $("stat-decode").textContent = t.decodeTokens ? `${tokS.toFixed(1)} tokens/s (${t.decodeTokens} tokens)` : "–";
    $("stat-prompt").textContent = `${t.prefillTokens} positions, ${result.ids.length} new tokens`;
    window.edgevlm.last = { question, image: im.name, ids: result.ids, text: result.text, imageMs, ttftMs: ttft, tokS, ...t };
    status("Done.");
    setState("done");
  } catch (e) {
    fail(e);
  }
  updateAsk();
}

/**
 * Speed as `edgevlm bench` measures it: exactly `newTokens` generated (EOS ignored), no painting, after
 * `warmup` untimed runs; per run { imageMs, ttftMs, prefillMs, decodeTokS }, and the first run on its own
 * (V8 runs wasm first through its baseline compiler and optimizes hot functions in the background, so the first
 * answers after a page load are slower than the steady state).
 */
async function bench({ question, newTokens = 32, runs = 3, warmup = 15 }) {
  const rt = state.runtime, im = state.image;
  const out = [];
  for (let r = 0; r < warmup + runs; r++) {
    const t0 = performance.now();
    const image = await rt.encodeImage(im.rgb, im.width, im.height);
    const imageMs = performance.now() - t0;
    const { timing: t } = await rt.generate(image, question, { maxNewTokens: newTokens, ignoreEos: true });
    out.push({ imageMs, prefillMs: t.prefillMs, ttftMs: imageMs + t.prefillMs, prefillTokens: t.prefillTokens,
               decodeTokens: t.decodeTokens, decodeTokS: (t.decodeTokens / t.decodeMs) * 1e3 });
  }
  return { threads, crossOriginIsolated, first: out[0], runs: out.slice(warmup) };
}

$("bundle-load").addEventListener("click", () => {
  const url = $("bundle-url").value.trim();
  if (url) loadBundle(fetchSource(url), url);
});
$("bundle-dir").addEventListener("change", (ev) => {
  const files = ev.target.files;
  if (files.length) loadBundle(filesSource(files), (files[0].webkitRelativePath || "").split("/")[0] || "picked directory");
});
$("image").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  try {
    state.image = await decodeImage(file);
    $("image-info").textContent = `${file.name}: ${state.image.width}×${state.image.height}`;
    if (document.body.dataset.state === "error" && state.runtime) setState("ready");
  } catch (e) {
    state.image = null;
    fail(new Error(`${file.name}: cannot decode the image (${e.message})`));
  }
  updateAsk();
});
$("ask").addEventListener("click", ask);
$("question").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !$("ask").disabled) {
    ev.preventDefault(); // Enter asks; Shift+Enter is a newline (a question may put <image> on its own line)
    ask();
  }
});

$("stat-threads").textContent = String(threads);
$("stat-coi").textContent = crossOriginIsolated ? "yes" : "no (single-threaded wasm)";
if (params.get("question")) $("question").value = params.get("question");
if (params.get("bundle")) {
  $("bundle-url").value = params.get("bundle");
  loadBundle(fetchSource(params.get("bundle")), params.get("bundle"));
} else {
  setState("idle");
}
