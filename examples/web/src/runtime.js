// The runtime contract (edgevlm/runtimes/base.py ContractRuntime) over three onnxruntime-web sessions:
// vision (pixel_values → image_embeds), embedding (input_ids → inputs_embeds) and decoder (inputs_embeds,
// attention_mask, position_ids, past_key_values.* → logits, present.*). The prompt's embeddings are
// embed(ids before the image) ++ image_embeds ++ embed(ids after); prefill runs them with an empty cache, then
// one token per step with the previous step's presents as pasts; greedy (first argmax), stopping at EOS,
// max_new_tokens or the bundle's context. DOM-free: Node tests import it.

import * as ort from "onnxruntime-web";
import { BundleError } from "./bundle.js";
import { preprocess } from "./image.js";
import { promptIds, renderPrompt, splitAtImage } from "./prompt.js";
import { TextTokenizer } from "./tokenizer.js";

export const MAX_NEW_TOKENS = 64; // edgevlm.config.MAX_NEW_TOKENS
const now = () => globalThis.performance.now();
const EMPTY = { float32: Float32Array, float16: Uint16Array }; // KV element type → typed array (never read)

/**
 * Set the wasm backend's threads before the first session: > 1 needs SharedArrayBuffer, which a page only
 * has when cross-origin isolated (served with COOP: same-origin and COEP: require-corp).
 */
export function configureWasm({ threads = 1 } = {}) {
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = "error";
}

export class OnnxBundleRuntime {
  /** @param bundle { manifest, files } from openBundle */
  static async create(bundle) {
    const rt = new OnnxBundleRuntime(bundle);
    const { graphs, weights = "weights.bin" } = bundle.manifest.runtime;
    for (const name of ["vision", "embedding", "decoder"]) {
      if (!graphs[name]) throw new BundleError(`manifest runtime.graphs lacks ${JSON.stringify(name)}`, "manifest.json");
      rt.sessions[name] = await openSession(bundle, graphs[name], weights);
    }
    return rt;
  }

  constructor({ manifest, files }) {
    this.manifest = manifest;
    this.tokenizer = new TextTokenizer(files, manifest.prompt);
    this.sessions = {};
    const kv = manifest.runtime.kv_cache;
    const pattern = (p, i, which) => p.replace("%d", i).replace("%s", which);
    this.pastNames = [];
    this.presentNames = [];
    for (let i = 0; i < kv.layers; i++) {
      for (const which of ["key", "value"]) {
        this.pastNames.push(pattern(kv.past, i, which));
        this.presentNames.push(pattern(kv.present, i, which));
      }
    }
    const kvType = manifest.runtime.graphs.decoder.inputs[this.pastNames[0]][0];
    if (!EMPTY[kvType]) throw new BundleError(`KV cache element type ${kvType} is not supported here`, "manifest.json");
    this.emptyPast = () => new ort.Tensor(kvType, new EMPTY[kvType](0), [1, kv.kv_heads, 0, kv.head_dim]);
  }

  /** Prompt ids for a question (IMAGE_TOKEN at the image), as Python's Bundle.prompt_ids, refusals included. */
  promptIds(question) {
    const p = this.manifest.prompt;
    return promptIds(renderPrompt(p.template, question, p.image_placeholder), (t) => this.tokenizer.encode(t), p,
      this.tokenizer.addedSpecial);
  }

  /** RGB HWC uint8 → { embeds: Float32Array (N_img * D), n, dim, pixels, resized }: preprocessing + vision. */
  async encodeImage(rgb, width, height) {
    const { resized, pixels } = preprocess(rgb, width, height, this.manifest.image);
    const size = this.manifest.image.size;
    const out = await this.sessions.vision.run({ pixel_values: new ort.Tensor("float32", pixels, [1, 3, size, size]) });
    const t = out.image_embeds; // (1, N_img, D)
    return { embeds: t.data, n: t.dims[1], dim: t.dims[2], pixels, resized };
  }

  async embed(ids) {
    const input = new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
    const out = await this.sessions.embedding.run({ input_ids: input });
    return out.inputs_embeds.data; // (1, T, D) flat
  }

  /** The prompt's embeddings with the image spliced in, flat (T + N_img - 1) * D, and that length. */
  async promptEmbeds(image, ids) {
    const [idsBefore, idsAfter] = splitAtImage(ids, this.manifest.prompt.image_placeholder);
    const before = await this.embed(idsBefore);
    const after = await this.embed(idsAfter);
    const all = new Float32Array(before.length + image.embeds.length + after.length);
    all.set(before, 0);
    all.set(image.embeds, before.length);
    all.set(after, before.length + image.embeds.length);
    return { embeds: all, length: all.length / image.dim };
  }

  /** One decoder call: T new positions after the cached ones → logits of the last position. */
  async step(embeds, T, dim) {
    const P = this.past[0].dims[2];
    const feeds = {
      inputs_embeds: new ort.Tensor("float32", embeds, [1, T, dim]),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(P + T).fill(1n), [1, P + T]),
      position_ids: new ort.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(P + i)), [1, T]),
    };
    this.pastNames.forEach((name, i) => (feeds[name] = this.past[i]));
    const out = await this.sessions.decoder.run(feeds);
    for (const t of this.past) if (t.dims[2] > 0) t.dispose();
    this.past = this.presentNames.map((name) => out[name]);
    const logits = out.logits; // (1, 1, V): the decoder's LM head runs on the last position only
    const [, rows, V] = logits.dims;
    return logits.data.subarray((rows - 1) * V, rows * V);
  }

  /**
   * Greedy answer to `question` about an encoded image (encodeImage's result).
   * `onToken(ids, text)` is called after every new token; `ignoreEos` generates exactly maxNewTokens (bench).
   * Returns { ids, text, timing: { prefillMs, prefillTokens, decodeMs, decodeTokens } }: decodeTokens counts
   * the tokens decoded after the first (the EOS that stopped it included), the steps decodeMs timed.
   */
  async generate(image, question, { maxNewTokens = MAX_NEW_TOKENS, onToken, ignoreEos = false } = {}) {
    const ids = this.promptIds(question);
    const limit = this.manifest.max_context, eos = this.manifest.prompt.eos_id;
    const t0 = now();
    const { embeds, length } = await this.promptEmbeds(image, ids);
    if (length >= limit) throw new BundleError(`prompt of ${length} positions does not fit the bundle's context of ${limit}`);
    this.past = this.pastNames.map(() => this.emptyPast());
    let logits = await this.step(embeds, length, image.dim);
    const t1 = now();
    const answer = [];
    let pos = length, steps = 0; // steps: decoder calls after prefill, each yielding one token (EOS included)
    while (answer.length < maxNewTokens && pos < limit) {
      const tok = argmax(logits);
      if (tok === eos && !ignoreEos) break;
      answer.push(tok);
      await onToken?.(answer, this.tokenizer.decode(answer));
      if (answer.length === maxNewTokens) break; // the last token's logits are not needed
      logits = await this.step(await this.embed([tok]), 1, image.dim);
      pos += 1;
      steps += 1;
    }
    const t2 = now();
    for (const t of this.past) if (t.dims[2] > 0) t.dispose();
    return {
      ids: answer,
      text: this.tokenizer.decode(answer),
      timing: { prefillMs: t1 - t0, prefillTokens: length, decodeMs: t2 - t1, decodeTokens: steps },
    };
  }
}

/** First index of the maximum, as numpy's argmax. */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

async function openSession(bundle, entry, weights) {
  const { files } = bundle;
  if (!files.has(entry.file)) throw new BundleError("graph file missing from the bundle", entry.file);
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  if (files.has(weights)) options.externalData = [{ path: weights, data: files.get(weights) }];
  let session;
  try {
    session = await ort.InferenceSession.create(files.get(entry.file), options);
  } catch (e) {
    throw new BundleError(`onnxruntime-web cannot load the graph (${String(e.message ?? e).split("\n")[0]})`, entry.file);
  }
  // the graph's inputs and outputs against the manifest's (names, element types, shapes with named axes)
  for (const [kind, meta] of [["inputs", session.inputMetadata], ["outputs", session.outputMetadata]]) {
    const want = entry[kind], got = new Map(meta.map((m) => [m.name, m]));
    const missing = Object.keys(want).find((n) => !got.has(n));
    if (missing) throw new BundleError(`graph lacks ${kind.slice(0, -1)} ${JSON.stringify(missing)} that manifest.json lists`, entry.file);
    const extra = [...got.keys()].find((n) => !(n in want));
    if (extra) throw new BundleError(`graph has ${kind.slice(0, -1)} ${JSON.stringify(extra)} that manifest.json does not list`, entry.file);
    for (const [name, [type, shape]] of Object.entries(want)) {
      const m = got.get(name), gotSpec = JSON.stringify([m.type, m.shape]);
      if (gotSpec !== JSON.stringify([type, shape])) {
        throw new BundleError(`${kind.slice(0, -1)} ${JSON.stringify(name)} is ${gotSpec}, manifest.json says ${JSON.stringify([type, shape])}`, entry.file);
      }
    }
  }
  return session;
}
