package edgevlm.core

/**
 * The prompt and the image splice, docs/bundle-spec.md section 6 (edgevlm/bundle/template.py, tokenizer.py):
 * the question becomes one user turn, the rendered prompt is split at `<image>` and each text piece is
 * tokenized on its own, with [IMAGE_TOKEN_INDEX] marking where the image embeddings go.
 */
const val IMAGE_PLACEHOLDER = "<image>"

/** LLaVA's placeholder id: never a vocabulary id, never passed to a model. */
const val IMAGE_TOKEN_INDEX = -200

/** The manifest's `prompt.template`. */
data class Template(
    val name: String,
    val system: String,
    val user: String,
    val assistant: String,
    val answerPrefix: String,
    val imageLast: Boolean,
) {
    /** One user turn whose text holds `<image>`, ending where the answer begins. */
    fun prompt(question: String): String {
        val turn = when {
            imageLast -> question.replace("$IMAGE_PLACEHOLDER\n", "").replace(IMAGE_PLACEHOLDER, "").stripSpace() +
                "\n" + IMAGE_PLACEHOLDER
            IMAGE_PLACEHOLDER !in question -> "$IMAGE_PLACEHOLDER\n$question"
            else -> question
        }
        return system + user + turn + assistant
    }
}

/** The manifest's `prompt` section. */
data class PromptSpec(
    val template: Template,
    val imageTokens: Int,
    val bosId: Int,
    val eosId: Int,
    val padId: Int,
    val addBos: Boolean,
) {
    /** BOS (when the bundle adds one), then the text pieces around `<image>`, [IMAGE_TOKEN_INDEX] between them. */
    fun ids(tokenizer: Tokenizer, prompt: String): IntArray {
        val ids = ArrayList<Int>()
        if (addBos) ids.add(bosId)
        prompt.split(IMAGE_PLACEHOLDER).forEachIndexed { i, piece ->
            if (i > 0) ids.add(IMAGE_TOKEN_INDEX)
            tokenizer.encode(piece).forEach { ids.add(it) }
        }
        return ids.toIntArray()
    }
}

/** Prompt ids → (ids before the image, ids after it); a prompt needs exactly one [IMAGE_TOKEN_INDEX]. */
fun splitAtImage(ids: IntArray): Pair<IntArray, IntArray> {
    val n = ids.count { it == IMAGE_TOKEN_INDEX }
    if (n != 1) throw EdgeVLMError("a prompt needs exactly one image placeholder $IMAGE_PLACEHOLDER, got $n")
    val at = ids.indexOf(IMAGE_TOKEN_INDEX)
    return ids.copyOfRange(0, at) to ids.copyOfRange(at + 1, ids.size)
}

/** Python's `str.strip()`, which the reference applies to questions (image_last) and to answers. */
fun String.stripSpace(): String {
    var start = 0
    var end = length
    while (start < end && isPythonSpace(this[start].code)) start++
    while (end > start && isPythonSpace(this[end - 1].code)) end--
    return substring(start, end)
}

/** Python's `str.isspace()` for one character. */
internal fun isPythonSpace(c: Int): Boolean =
    c in 0x09..0x0D || c in 0x1C..0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || c in 0x2000..0x200A ||
        c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000
