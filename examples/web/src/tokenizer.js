// The bundle's tokenizer.json through @huggingface/tokenizers (a pure-JS reader of the Rust `tokenizers`
// format; the node tests check its ids against Python's on the goldens). Special ids come from the manifest.

import { Tokenizer } from "@huggingface/tokenizers";
import { BundleError } from "./bundle.js";

export const TOKENIZER = "tokenizer.json";
const SPECIALS = "tokenizer_config.json"; // beside tokenizer.json when the specials are not <s> </s> <pad>

export class TextTokenizer {
  /** @param files Map(name → Uint8Array) of the opened bundle; @param prompt the manifest's prompt section */
  constructor(files, prompt) {
    const json = (name) => JSON.parse(new TextDecoder().decode(files.get(name)));
    let config = {}, spec;
    try {
      if (files.has(SPECIALS)) config = json(SPECIALS);
      spec = json(TOKENIZER);
      this.tok = new Tokenizer(spec, { ...config, clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new BundleError(`not a valid tokenizer (${e.message})`, TOKENIZER);
    }
    this.special = new Set([prompt.bos_id, prompt.eos_id, prompt.pad_id]);
    // every added token marked special (BOS, EOS, PAD, <unusedN> padding...), id → text: what a prompt must not
    // spell (Python: TextTokenizer.special_ids, from the same tokenizer.json list)
    this.addedSpecial = new Map((spec.added_tokens ?? []).filter((t) => t.special).map((t) => [t.id, t.content]));
  }

  /** Text → ids, no special tokens added (Python: encode(text, add_special_tokens=False)). */
  encode(text) {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  /** Ids → text as Python's Runtime.decode: BOS / EOS / PAD dropped, special tokens skipped, stripped. */
  decode(ids) {
    const kept = ids.filter((i) => !this.special.has(i));
    if (kept.length === 0) return ""; // the JS tokenizer refuses an empty list
    return this.tok.decode(kept, { skip_special_tokens: true, clean_up_tokenization_spaces: false }).trim();
  }
}
