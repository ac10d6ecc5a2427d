package edgevlm.core

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import org.json.JSONTokener
import java.io.File
import java.nio.file.Files
import java.security.MessageDigest

/**
 * A bundle directory and its `manifest.json`, checked as docs/bundle-spec.md section 2 orders: the manifest is a
 * JSON object inside the bundle, its spec_version is one this reader knows, every listed path stays inside the
 * bundle, the fields this client reads have their schema's types (edgevlm/bundle/manifest.schema.json, by hand:
 * no JSON Schema validator without Maven), then every listed file has its size and sha256. The first problem is
 * one [EdgeVLMError] naming the file. org.json is the JSON API Android ships, so the core adds no dependency.
 */
class ModelBundle private constructor(
    val dir: File,
    val manifest: Manifest,
    val tokenizer: Tokenizer,
) {
    val preprocess: Preprocess get() = manifest.preprocess
    val prompt: PromptSpec get() = manifest.prompt

    /** A file the manifest lists; naming one it does not list is an error (a runtime opens only listed files). */
    fun file(name: String): File {
        if (name !in manifest.files) throw EdgeVLMError("manifest lists no file '$name'", File(dir, MANIFEST))
        return File(dir, name)
    }

    /** The question's prompt ids, `IMAGE_TOKEN_INDEX` where the image goes (spec section 6). */
    fun promptIds(question: String): IntArray = prompt.ids(tokenizer, prompt.template.prompt(question))

    companion object {
        const val MANIFEST = "manifest.json"
        const val TOKENIZER = "tokenizer.json"

        /** Reads and checks [dir]; `checkFiles = false` skips hashing (e.g. a bundle already checked once). */
        fun open(dir: File, checkFiles: Boolean = true): ModelBundle {
            if (!dir.isDirectory) throw EdgeVLMError("bundle directory not found", dir)
            val manifest = Manifest.read(dir)
            if (checkFiles) checkFiles(dir, manifest.files)
            return ModelBundle(dir, manifest, Tokenizer.load(File(dir, TOKENIZER)))
        }

        private fun checkFiles(dir: File, files: Map<String, FileEntry>) {
            for ((name, entry) in files) {
                val f = File(dir, name)
                if (!f.isFile) throw EdgeVLMError("file listed in manifest.json is missing", f)
                if (f.length() != entry.bytes) {
                    throw EdgeVLMError("size ${f.length()} differs from manifest.json (${entry.bytes} bytes): truncated or replaced", f)
                }
                if (sha256(f) != entry.sha256) throw EdgeVLMError("sha256 differs from manifest.json: the file was modified", f)
            }
        }
    }
}

data class FileEntry(val sha256: String, val bytes: Long)

/** The manifest fields a client reads (spec section 3), typed. */
class Manifest(
    val specVersion: String,
    val format: String,
    val preprocess: Preprocess,
    val prompt: PromptSpec,
    val maxContext: Int,
    val runtime: JSONObject,
    val files: Map<String, FileEntry>,
) {
    companion object {
        /** Majors this reader knows: 0 (manifests written before the spec, without the field) and 1. */
        private val READS_MAJOR = setOf("0", "1")
        private val FORMATS = setOf("gguf", "executorch", "onnx", "coreml")
        private val TOP_LEVEL = setOf(
            "spec_version", "edgevlm_version", "format", "quantization", "family", "model", "parameters",
            "image", "prompt", "max_context", "runtime", "files", "verification",
        )
        /** Each format's runtime fields that it must have (spec section 7); of them, [RUNTIME_PATHS] name files. */
        private val RUNTIME_REQUIRED = mapOf(
            "gguf" to listOf("text_model", "mmproj"),
            "executorch" to listOf("program"),
            "onnx" to listOf("graphs", "opset", "kv_cache"),
            "coreml" to listOf("functions"),
        )
        private val RUNTIME_PATHS = setOf("text_model", "mmproj", "program")

        fun read(dir: File): Manifest {
            val where = File(dir, ModelBundle.MANIFEST)
            checkInside(dir, ModelBundle.MANIFEST, where)
            if (!where.isFile) throw EdgeVLMError("manifest not found", where)
            val root = try {
                JSONTokener(where.readText()).nextValue()
            } catch (e: JSONException) {
                throw EdgeVLMError("not valid JSON (${e.message?.lineSequence()?.first()})", where)
            }
            if (root !is JSONObject) throw EdgeVLMError("not a manifest: the top level is not a JSON object", where)
            val version = root.opt("spec_version") ?: "0"
            val major = (version as? String)?.substringBefore('.')
            if (major !in READS_MAJOR) {
                val shown = if (version is String) "'$version'" else version.toString()
                throw EdgeVLMError("spec_version $shown is not one this edgevlm reads (0, 1.x): a newer edgevlm " +
                    "wrote it, or it is not an edgevlm manifest", where)
            }
            (root.opt("files") as? JSONObject)?.keys()?.forEach { checkInside(dir, it, where) }
            return Fields(root, "", where).parse(version as String)
        }

        private fun Fields.parse(version: String): Manifest {
            closed(TOP_LEVEL)
            if (version != "0") string("spec_version", Regex("[0-9]+\\.[0-9]+"))
            val format = string("format")
            if (format !in FORMATS) fail("format", "'$format' is not one of ${FORMATS.joinToString(", ")}")
            obj("quantization")
            val image = obj("image").run {
                closed(setOf("size", "mean", "std", "resize", "rescale"))
                if (string("resize") != "bicubic") fail("resize", "only 'bicubic' is defined")
                Preprocess(
                    size = int("size", 1, 8192),
                    mean = numbers("mean", 3),
                    std = numbers("std", 3, positive = true),
                    rescale = number("rescale", positive = true),
                )
            }
            val prompt = obj("prompt").run {
                closed(setOf("template", "image_placeholder", "image_tokens", "bos_id", "eos_id", "pad_id", "add_bos"))
                if (string("image_placeholder") != IMAGE_PLACEHOLDER) fail("image_placeholder", "must be '$IMAGE_PLACEHOLDER'")
                val template = obj("template").run {
                    closed(setOf("name", "system", "user", "assistant", "answer_prefix", "image_last"))
                    Template(string("name"), string("system"), string("user"), string("assistant"),
                        string("answer_prefix"), bool("image_last"))
                }
                PromptSpec(template, int("image_tokens", 1), int("bos_id", 0), int("eos_id", 0), int("pad_id", 0),
                    bool("add_bos"))
            }
            val maxContext = int("max_context", 1)
            val runtime = obj("runtime")
            for (key in RUNTIME_REQUIRED.getValue(format)) if (key in RUNTIME_PATHS) runtime.path(key) else runtime.require(key)
            val files = obj("files").run {
                val entries = obj.keys().asSequence().associateWith { name ->
                    obj(name).run {
                        closed(setOf("sha256", "bytes"))
                        FileEntry(string("sha256", Regex("[0-9a-f]{64}")), int("bytes", 0).toLong())
                    }
                }
                if (ModelBundle.TOKENIZER !in entries) fail(ModelBundle.TOKENIZER, "not listed: every bundle carries its tokenizer")
                entries
            }
            return Manifest(version, format, image, prompt, maxContext, runtime.obj, files)
        }

        /** Spec section 2, rule 3: a relative `/`-separated path with no empty, `.` or `..` segment, inside [dir]. */
        internal fun checkInside(dir: File, name: String, where: File) {
            pathProblem(name)?.let { throw EdgeVLMError(it, where) }
            val target = File(dir, name)
            if ((Files.isSymbolicLink(target.toPath()) || target.exists()) &&
                !target.canonicalFile.startsWith(dir.canonicalFile)) {
                throw EdgeVLMError("'$name' is a symlink to ${target.canonicalFile}, outside the bundle", where)
            }
        }

        /** Why [name] is not a relative path that stays inside a bundle, or null when it is one. */
        internal fun pathProblem(name: String): String? = when {
            name.isEmpty() || '\\' in name || '\u0000' in name ->
                "file name '$name' is not a relative path with / separators"
            name.startsWith("/") || Regex("^[A-Za-z]:").containsMatchIn(name) ->
                "file name '$name' is an absolute path: a bundle names files inside itself"
            name.split('/').any { it == "" || it == "." || it == ".." } ->
                "file name '$name' leaves the bundle or is not normalized ('..', '.', '//')"
            else -> null
        }
    }
}

/** Typed reads of one manifest section; a wrong type, a missing or an unknown key fails naming `section.key`. */
internal class Fields(val obj: JSONObject, private val section: String, private val where: File) {
    private fun at(key: String) = if (section.isEmpty()) key else "$section.$key"

    fun fail(key: String, problem: String): Nothing = throw EdgeVLMError("${at(key)}: $problem", where)

    fun require(key: String): Any = obj.opt(key)?.takeIf { it != JSONObject.NULL } ?: fail(key, "required, missing")

    fun closed(allowed: Set<String>) {
        obj.keys().forEach { if (it !in allowed) fail(it, "unknown key (this spec version defines ${allowed.sorted().joinToString(", ")})") }
    }

    fun string(key: String, pattern: Regex? = null): String {
        val v = require(key) as? String ?: fail(key, "expected a string, got ${obj.opt(key)}")
        if (pattern != null && !pattern.matches(v)) fail(key, "'$v' does not match ${pattern.pattern}")
        return v
    }

    fun bool(key: String): Boolean = require(key) as? Boolean ?: fail(key, "expected true or false, got ${obj.opt(key)}")

    fun int(key: String, min: Int, max: Int = Int.MAX_VALUE): Int {
        val v = require(key)
        val n = (v as? Number)?.toDouble()?.takeIf { it == Math.floor(it) && v !is Boolean }
            ?: fail(key, "expected an integer, got $v")
        if (n < min || n > max) fail(key, "$v is outside $min..$max")
        return n.toInt()
    }

    fun number(key: String, positive: Boolean = false): Double = checkNumber(key, require(key), positive)

    fun numbers(key: String, count: Int, positive: Boolean = false): DoubleArray {
        val a = require(key) as? JSONArray ?: fail(key, "expected $count numbers, got ${obj.opt(key)}")
        if (a.length() != count) fail(key, "expected $count numbers, got ${a.length()}")
        return DoubleArray(count) { checkNumber(key, a.get(it), positive) }
    }

    private fun checkNumber(key: String, v: Any, positive: Boolean): Double {
        val x = (v as? Number)?.toDouble() ?: fail(key, "expected a number, got $v")
        if (positive && x <= 0) fail(key, "must be > 0, got $v")
        return x
    }

    fun obj(key: String): Fields = Fields(require(key) as? JSONObject ?: fail(key, "expected an object"), at(key), where)

    /** A runtime field naming a bundle file. */
    fun path(key: String): String = string(key).also { name -> Manifest.pathProblem(name)?.let { fail(key, it) } }
}

/** Lower-case hex sha256 of a file, read in 1 MiB blocks. */
fun sha256(file: File): String {
    val digest = MessageDigest.getInstance("SHA-256")
    file.inputStream().use { input ->
        val block = ByteArray(1 shl 20)
        while (true) {
            val n = input.read(block)
            if (n < 0) break
            digest.update(block, 0, n)
        }
    }
    return hex(digest.digest())
}

fun sha256(bytes: ByteArray): String = hex(MessageDigest.getInstance("SHA-256").digest(bytes))

private fun hex(bytes: ByteArray): String = bytes.joinToString("") { "%02x".format(it) }
