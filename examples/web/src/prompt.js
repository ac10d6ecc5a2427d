// The prompt as Python builds it (edgevlm/data/templates.py Template.prompt and
// edgevlm/data/tokenizer.py encode_prompt): the manifest's template around the question, then BOS (when
// add_bos) + each text piece between `<image>` markers tokenized on its own, IMAGE_TOKEN where the image goes.

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

/** Prompt ids with IMAGE_TOKEN at the image: `encode(text) → number[]` encodes without special tokens. */
export function promptIds(prompt, encode, spec) {
  const ids = spec.add_bos ? [spec.bos_id] : [];
  prompt.split(spec.image_placeholder ?? "<image>").forEach((piece, i) => {
    if (i) ids.push(IMAGE_TOKEN);
    ids.push(...encode(piece));
  });
  return ids;
}
