package edgevlm.core

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import org.json.JSONTokener
import java.io.File

/**
 * The bundle's `tokenizer.json` (docs/bundle-spec.md section 5): byte-level BPE as Hugging Face `tokenizers`
 * runs it, without the library. Added tokens written in the text are matched first (leftmost, longest), the rest
 * is split by GPT-2's pre-tokenizer regex
 * `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, each piece's UTF-8 bytes become
 * GPT-2's byte→unicode characters and are merged by rank. The regex is a hand-written scanner over code points,
 * so Java's, Android's (ICU) and Swift's regex dialects cannot disagree on `\s`. A tokenizer this code does not
 * implement (another model type, a normaliser, stripping added tokens) is refused, not approximated.
 */
class Tokenizer private constructor(
    private val vocab: Map<String, Int>,
    private val ranks: Map<String, Int>,
    private val added: Map<String, Int>,
    private val specialIds: Set<Int>,
    private val tokens: Map<Int, String>,
    private val ignoreMerges: Boolean,
) {
    private val cache = HashMap<String, IntArray>()
    private val longestAdded = added.keys.maxOfOrNull { it.length } ?: 0

    /** The ids of [text] with no special tokens added around it; added tokens in the text are matched as such. */
    fun encode(text: String): IntArray {
        val ids = ArrayList<Int>()
        var start = 0 // first character not yet encoded
        var i = 0
        while (i < text.length) {
            val match = addedAt(text, i)
            if (match == null) {
                i++
                continue
            }
            encodeText(text.substring(start, i), ids)
            ids.add(added.getValue(match))
            i += match.length
            start = i
        }
        encodeText(text.substring(start), ids)
        return ids.toIntArray()
    }

    /** The text of [ids], special tokens dropped (bytes joined, then UTF-8; invalid sequences become U+FFFD). */
    fun decode(ids: IntArray): String {
        val bytes = java.io.ByteArrayOutputStream()
        for (id in ids) {
            if (id in specialIds) continue
            val token = tokens[id] ?: continue
            val raw = token.codePoints().toArray().map { UNICODE_TO_BYTE[it] ?: -1 }
            if (raw.all { it >= 0 }) raw.forEach { bytes.write(it) } else bytes.write(token.toByteArray(Charsets.UTF_8))
        }
        return String(bytes.toByteArray(), Charsets.UTF_8)
    }

    private fun addedAt(text: String, i: Int): String? {
        for (n in minOf(longestAdded, text.length - i) downTo 1) {
            val s = text.substring(i, i + n)
            if (s in added) return s
        }
        return null
    }

    private fun encodeText(text: String, out: MutableList<Int>) {
        for (word in preTokenize(text)) cache.getOrPut(word) { bpe(word) }.forEach { out.add(it) }
    }

    private fun bpe(word: String): IntArray {
        val symbols = word.toByteArray(Charsets.UTF_8).map { BYTE_TO_UNICODE[it.toInt() and 0xFF] }.toMutableList()
        val whole = symbols.joinToString("")
        if (ignoreMerges && whole in vocab) return intArrayOf(vocab.getValue(whole))
        while (symbols.size > 1) {
            var best = -1
            var bestRank = Int.MAX_VALUE
            for (j in 0 until symbols.size - 1) {
                val rank = ranks[symbols[j] + " " + symbols[j + 1]] ?: continue
                if (rank < bestRank) {
                    bestRank = rank
                    best = j
                }
            }
            if (best < 0) break
            symbols[best] = symbols[best] + symbols.removeAt(best + 1)
        }
        return IntArray(symbols.size) { vocab.getValue(symbols[it]) } // every byte and merge result: checked at load
    }

    companion object {
        /** GPT-2's byte → printable character table: printable Latin-1 bytes map to themselves, the rest to 256+. */
        private val BYTE_TO_UNICODE: Array<String> = run {
            val keep = (33..126) + (161..172) + (174..255)
            var next = 256
            Array(256) { b -> String(Character.toChars(if (b in keep) b else next++)) }
        }
        private val UNICODE_TO_BYTE: Map<Int, Int> = BYTE_TO_UNICODE.withIndex().associate { (b, s) -> s.codePointAt(0) to b }

        fun load(file: File): Tokenizer {
            if (!file.isFile) throw EdgeVLMError("tokenizer file not found", file)
            return try {
                parse(JSONTokener(file.readText()).nextValue() as? JSONObject ?: throw JSONException("not an object"), file)
            } catch (e: JSONException) {
                throw EdgeVLMError("not a valid tokenizer.json (${e.message?.lineSequence()?.first()})", file)
            }
        }

        private fun parse(root: JSONObject, file: File): Tokenizer {
            fun refuse(what: String): Nothing = throw EdgeVLMError("$what: only byte-level BPE tokenizers are implemented", file)
            val model = root.getJSONObject("model")
            if (model.optString("type") != "BPE") refuse("model type '${model.optString("type")}'")
            if (!root.isNull("normalizer")) refuse("a normalizer")
            val pre = root.optJSONObject("pre_tokenizer")
            if (pre == null || pre.optString("type") != "ByteLevel" || pre.optBoolean("add_prefix_space") || !pre.optBoolean("use_regex", true)) {
                refuse("pre_tokenizer ${root.opt("pre_tokenizer")}")
            }
            for (key in listOf("continuing_subword_prefix", "end_of_word_suffix")) {
                if (model.optString(key, "").let { it.isNotEmpty() && it != "null" }) refuse("model.$key")
            }
            if (model.optBoolean("byte_fallback")) refuse("model.byte_fallback")
            if (!model.isNull("dropout")) refuse("model.dropout")

            val vocabJson = model.getJSONObject("vocab")
            val vocab = vocabJson.keys().asSequence().associateWith { vocabJson.getInt(it) }
            val merges = model.getJSONArray("merges")
            val ranks = HashMap<String, Int>()
            for (r in 0 until merges.length()) {
                val m = merges.get(r)
                val pair = if (m is JSONArray) m.getString(0) + " " + m.getString(1) else m as String
                ranks.putIfAbsent(pair, r)
            }
            BYTE_TO_UNICODE.firstOrNull { it !in vocab }?.let { refuse("byte '$it' missing from the vocabulary") }
            ranks.keys.firstOrNull { it.replace(" ", "") !in vocab }?.let { refuse("merge '$it' with no vocabulary entry") }
            val added = HashMap<String, Int>()
            val special = HashSet<Int>()
            val addedJson = root.optJSONArray("added_tokens") ?: JSONArray()
            for (k in 0 until addedJson.length()) {
                val t = addedJson.getJSONObject(k)
                if (t.optBoolean("lstrip") || t.optBoolean("rstrip") || t.optBoolean("single_word")) {
                    refuse("added token '${t.getString("content")}' with lstrip / rstrip / single_word")
                }
                added[t.getString("content")] = t.getInt("id")
                if (t.optBoolean("special")) special.add(t.getInt("id"))
            }
            val tokens = HashMap<Int, String>()
            vocab.forEach { (s, id) -> tokens[id] = s }
            added.forEach { (s, id) -> tokens[id] = s }
            return Tokenizer(vocab, ranks, added, special, tokens, model.optBoolean("ignore_merges"))
        }

        /** GPT-2's split (the regex above), in order of its alternatives, over code points. */
        internal fun preTokenize(text: String): List<String> {
            val c = text.codePoints().toArray()
            val words = ArrayList<String>()
            var i = 0
            while (i < c.size) {
                val end = matchAt(c, i)
                words.add(String(c, i, end - i))
                i = end
            }
            return words
        }

        private val CONTRACTIONS = listOf("s", "t", "re", "ve", "m", "ll", "d").map { it.codePoints().toArray() }

        /** The end of the regex's match at [i] (leftmost-first alternation, as Oniguruma runs it). */
        private fun matchAt(c: IntArray, i: Int): Int {
            if (c[i] == '\''.code) {
                for (s in CONTRACTIONS) {
                    if (i + s.size < c.size && (0 until s.size).all { c[i + 1 + it] == s[it] }) return i + 1 + s.size
                }
            }
            val j = if (c[i] == ' '.code) i + 1 else i // ` ?` before each of the three classes
            if (j < c.size) {
                for (cls in CLASSES) if (cls(c[j])) return run(c, j, cls)
            }
            val k = run(c, i, ::isWhiteSpace) // `\s+(?!\S)`, else `\s+`
            return if (k < c.size && k - 1 > i) k - 1 else k
        }

        private val CLASSES: List<(Int) -> Boolean> = listOf(::isLetter, ::isNumber, ::isOther)

        private fun run(c: IntArray, from: Int, cls: (Int) -> Boolean): Int {
            var k = from
            while (k < c.size && cls(c[k])) k++
            return k
        }

        private fun isLetter(cp: Int) = Character.isLetter(cp)

        private fun isNumber(cp: Int) = when (Character.getType(cp).toByte()) {
            Character.DECIMAL_DIGIT_NUMBER, Character.LETTER_NUMBER, Character.OTHER_NUMBER -> true
            else -> false
        }

        private fun isOther(cp: Int) = !isWhiteSpace(cp) && !isLetter(cp) && !isNumber(cp)

        /** Unicode's White_Space property, what `\s` matches in the Unicode regex engines tokenizers uses. */
        internal fun isWhiteSpace(cp: Int): Boolean =
            cp in 0x09..0x0D || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 || cp in 0x2000..0x200A ||
                cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000
    }
}
