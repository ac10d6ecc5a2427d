// The prompt as Python builds it (edgevlm/bundle/template.py Template.prompt and
// edgevlm/bundle/tokenizer.py encode_prompt, split_at_image): the manifest's template around the question, then
// BOS (when add_bos) + each text piece between `<image>` markers tokenized on its own, IMAGE_TOKEN where the
// image goes. Refused as Python refuses them, with Python's messages (docs/bundle-spec.md section 6): text that
// is not valid Unicode, text that spells a special token (`</s>` would end the prompt mid-way), and a prompt
// without exactly one image marker.

import { BundleError } from "./bundle.js";

export const IMAGE_TOKEN = -200; // LLaVA's placeholder id: replaced by the image embeddings, never embedded

/** The rendered prompt text, ending where the answer begins. */
export function renderPrompt(template, question, placeholder = "<image>") {
  if (template.image_last) {
    const text = pyStrip(question.replaceAll(`${placeholder}\n`, "").replaceAll(placeholder, ""));
    question = `${text}\n${placeholder}`;
  } else if (!question.includes(placeholder)) {
    question = `${placeholder}\n${question}`;
  }
  return `${template.system}${template.user}${question}${template.assistant}`;
}

// Python's str.isspace() characters: JS's \s differs (it has U+FEFF, lacks U+001C..U+001F and U+0085).
const PY_SPACE = "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const STRIP = new RegExp(`^${PY_SPACE}+|${PY_SPACE}+$`, "gu");

/** Python's str.strip(). */
function pyStrip(s) {
  return s.replace(STRIP, "");
}

/**
 * Prompt ids with IMAGE_TOKEN at the image: `encode(text) → number[]` encodes without special tokens;
 * `special` maps the tokenizer's special (added) token ids to their text, none of which the ids after the
 * leading BOS may hold.
 */
export function promptIds(prompt, encode, spec, special = new Map()) {
  if (!prompt.isWellFormed()) throw new BundleError("the prompt is not valid UTF-8"); // a lone surrogate
  const ids = spec.add_bos ? [spec.bos_id] : [];
  prompt.split(spec.image_placeholder ?? "<image>").forEach((piece, i) => {
    if (i) ids.push(IMAGE_TOKEN);
    ids.push(...encode(piece));
  });
  const inside = [...new Set(ids.slice(spec.add_bos ? 1 : 0).filter((i) => special.has(i)))].sort((a, b) => a - b);
  if (inside.length) {
    const names = inside.slice(0, 3).map((i) => special.get(i)).join(" ");
    throw new BundleError(`the prompt contains the tokenizer's special token text ${names}`);
  }
  return ids;
}

/** Prompt ids → [ids before the image, ids after it]; a prompt needs exactly one IMAGE_TOKEN. */
export function splitAtImage(ids, placeholder = "<image>") {
  const n = ids.filter((i) => i === IMAGE_TOKEN).length;
  if (n !== 1) throw new BundleError(`a prompt needs exactly one image placeholder ${placeholder}, got ${n}`);
  const at = ids.indexOf(IMAGE_TOKEN);
  return [ids.slice(0, at), ids.slice(at + 1)];
}
