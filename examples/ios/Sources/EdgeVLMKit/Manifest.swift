import CryptoKit
import Foundation

/// A bundle directory and its `manifest.json`, checked as docs/bundle-spec.md section 2 orders: the manifest is a
/// JSON object inside the bundle, its spec_version is one this reader knows, every listed path stays inside the
/// bundle, the fields this client reads have their schema's types (edgevlm/bundle/manifest.schema.json, by hand),
/// then every listed file has its size and sha256. The first problem is one `EdgeVLMError` naming the file.
/// (Named ModelBundle, not Bundle, which Foundation and Android already use.)
public final class ModelBundle {
    public static let MANIFEST = "manifest.json"
    public static let TOKENIZER = "tokenizer.json"

    public let dir: URL
    public let manifest: Manifest
    public let tokenizer: Tokenizer
    public var preprocess: Preprocess { manifest.preprocess }
    public var prompt: PromptSpec { manifest.prompt }

    private init(dir: URL, manifest: Manifest, tokenizer: Tokenizer) {
        self.dir = dir
        self.manifest = manifest
        self.tokenizer = tokenizer
    }

    /// Reads and checks `dir`; `checkFiles = false` skips hashing (e.g. a bundle already checked once).
    public static func open(_ dir: URL, checkFiles: Bool = true) throws -> ModelBundle {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw EdgeVLMError("bundle directory not found", file: dir)
        }
        let manifest = try Manifest.read(dir)
        if checkFiles { try Self.checkFiles(dir, manifest.files) }
        return ModelBundle(dir: dir, manifest: manifest, tokenizer: try Tokenizer.load(dir.appendingPathComponent(TOKENIZER)))
    }

    /// A file the manifest lists; naming one it does not list is an error (a runtime opens only listed files).
    public func file(_ name: String) throws -> URL {
        guard manifest.files[name] != nil else {
            throw EdgeVLMError("manifest lists no file '\(name)'", file: dir.appendingPathComponent(Self.MANIFEST))
        }
        return dir.appendingPathComponent(name)
    }

    /// The question's prompt ids, `IMAGE_TOKEN_INDEX` where the image goes (spec section 6).
    public func promptIds(_ question: String) -> [Int] { prompt.ids(tokenizer, prompt.template.prompt(question)) }

    private static func checkFiles(_ dir: URL, _ files: [String: FileEntry]) throws {
        for (name, entry) in files.sorted(by: { $0.key < $1.key }) {
            let f = dir.appendingPathComponent(name)
            // symlinks followed (checkInside kept them inside the bundle), as Kotlin's File.isFile does
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: f.resolvingSymlinksInPath().path),
                  attributes[.type] as? FileAttributeType == .typeRegular else {
                throw EdgeVLMError("file listed in manifest.json is missing", file: f)
            }
            let size = (attributes[.size] as? NSNumber)?.int64Value ?? -1
            if size != entry.bytes {
                throw EdgeVLMError("size \(size) differs from manifest.json (\(entry.bytes) bytes): truncated or replaced", file: f)
            }
            if try sha256(f) != entry.sha256 { throw EdgeVLMError("sha256 differs from manifest.json: the file was modified", file: f) }
        }
    }
}

public struct FileEntry {
    public let sha256: String
    public let bytes: Int64
}

/// The manifest fields a client reads (spec section 3), typed.
public struct Manifest {
    public let specVersion: String
    public let format: String
    public let preprocess: Preprocess
    public let prompt: PromptSpec
    public let maxContext: Int
    public let runtime: [String: Any]
    public let files: [String: FileEntry]

    /// Majors this reader knows: 0 (manifests written before the spec, without the field) and 1.
    static let READS_MAJOR: Set<String> = ["0", "1"]
    static let FORMATS = ["gguf", "executorch", "onnx", "coreml"]
    static let TOP_LEVEL: Set<String> = [
        "spec_version", "edgevlm_version", "format", "quantization", "family", "model", "parameters",
        "image", "prompt", "max_context", "runtime", "files", "verification",
    ]
    /// Each format's runtime fields that it must have (spec section 7); of them, `RUNTIME_PATHS` name files.
    static let RUNTIME_REQUIRED: [String: [String]] = [
        "gguf": ["text_model", "mmproj"],
        "executorch": ["program"],
        "onnx": ["graphs", "opset", "kv_cache"],
        "coreml": ["functions"],
    ]
    static let RUNTIME_PATHS: Set<String> = ["text_model", "mmproj", "program"]

    static func read(_ dir: URL) throws -> Manifest {
        let whereFile = dir.appendingPathComponent(ModelBundle.MANIFEST)
        try checkInside(dir, ModelBundle.MANIFEST, whereFile)
        guard let data = FileManager.default.contents(atPath: whereFile.path) else {
            throw EdgeVLMError("manifest not found", file: whereFile)
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw EdgeVLMError("not valid JSON (\(error.localizedDescription))", file: whereFile)
        }
        guard let root = parsed as? [String: Any] else {
            throw EdgeVLMError("not a manifest: the top level is not a JSON object", file: whereFile)
        }
        let version: Any = root["spec_version"] ?? "0"
        let major = (version as? String).map { String($0.split(separator: ".", omittingEmptySubsequences: false)[0]) }
        guard let major, READS_MAJOR.contains(major), let versionString = version as? String else {
            let shown = (version as? String).map { "'\($0)'" } ?? "\(version)"
            throw EdgeVLMError("spec_version \(shown) is not one this edgevlm reads (0, 1.x): a newer edgevlm " +
                "wrote it, or it is not an edgevlm manifest", file: whereFile)
        }
        for name in (root["files"] as? [String: Any])?.keys.sorted() ?? [] {
            try checkInside(dir, name, whereFile)
        }
        return try Fields(root, "", whereFile).parse(versionString)
    }

    /// Spec section 2, rule 3: a relative `/`-separated path with no empty, `.` or `..` segment, inside `dir`.
    static func checkInside(_ dir: URL, _ name: String, _ whereFile: URL) throws {
        if let problem = pathProblem(name) { throw EdgeVLMError(problem, file: whereFile) }
        let target = dir.appendingPathComponent(name)
        let isLink = (try? FileManager.default.destinationOfSymbolicLink(atPath: target.path)) != nil
        let root = dir.resolvingSymlinksInPath().standardizedFileURL.path
        let resolved = target.resolvingSymlinksInPath().standardizedFileURL.path
        if (isLink || FileManager.default.fileExists(atPath: target.path)) && !(resolved == root || resolved.hasPrefix(root + "/")) {
            throw EdgeVLMError("'\(name)' is a symlink to \(resolved), outside the bundle", file: whereFile)
        }
    }

    /// Why `name` is not a relative path that stays inside a bundle, or nil when it is one.
    static func pathProblem(_ name: String) -> String? {
        let segments = name.split(separator: "/", omittingEmptySubsequences: false)
        if name.isEmpty || name.contains("\\") || name.contains("\u{0}") {
            return "file name '\(name)' is not a relative path with / separators"
        }
        if name.hasPrefix("/") || name.range(of: "^[A-Za-z]:", options: .regularExpression) != nil {
            return "file name '\(name)' is an absolute path: a bundle names files inside itself"
        }
        if segments.contains(where: { $0 == "" || $0 == "." || $0 == ".." }) {
            return "file name '\(name)' leaves the bundle or is not normalized ('..', '.', '//')"
        }
        return nil
    }
}

/// Typed reads of one manifest section; a wrong type, a missing or an unknown key fails naming `section.key`.
struct Fields {
    let obj: [String: Any]
    let section: String
    let whereFile: URL

    init(_ obj: [String: Any], _ section: String, _ whereFile: URL) {
        self.obj = obj
        self.section = section
        self.whereFile = whereFile
    }

    private func at(_ key: String) -> String { section.isEmpty ? key : "\(section).\(key)" }

    func fail(_ key: String, _ problem: String) -> EdgeVLMError { EdgeVLMError("\(at(key)): \(problem)", file: whereFile) }

    func require(_ key: String) throws -> Any {
        guard let v = obj[key], !(v is NSNull) else { throw fail(key, "required, missing") }
        return v
    }

    func closed(_ allowed: Set<String>) throws {
        for key in obj.keys.sorted() where !allowed.contains(key) {
            throw fail(key, "unknown key (this spec version defines \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    func string(_ key: String, _ pattern: String? = nil) throws -> String {
        guard let v = try require(key) as? String else { throw fail(key, "expected a string, got \(obj[key]!)") }
        if let pattern, v.range(of: "^(?:\(pattern))$", options: .regularExpression) == nil {
            throw fail(key, "'\(v)' does not match \(pattern)")
        }
        return v
    }

    func bool(_ key: String) throws -> Bool {
        let v = try require(key)
        guard isBool(v), let b = v as? Bool else { throw fail(key, "expected true or false, got \(v)") }
        return b
    }

    func int(_ key: String, _ min: Int, _ max: Int = Int.max) throws -> Int {
        let v = try require(key)
        guard !isBool(v), let n = (v as? NSNumber)?.doubleValue, n == n.rounded(.down) else {
            throw fail(key, "expected an integer, got \(v)")
        }
        if n < Double(min) || n > Double(max) { throw fail(key, "\(v) is outside \(min)..\(max)") }
        return Int(n)
    }

    func number(_ key: String, positive: Bool = false) throws -> Double { try checkNumber(key, try require(key), positive) }

    func numbers(_ key: String, _ count: Int, positive: Bool = false) throws -> [Double] {
        guard let a = try require(key) as? [Any] else { throw fail(key, "expected \(count) numbers, got \(obj[key]!)") }
        if a.count != count { throw fail(key, "expected \(count) numbers, got \(a.count)") }
        return try a.map { try checkNumber(key, $0, positive) }
    }

    private func checkNumber(_ key: String, _ v: Any, _ positive: Bool) throws -> Double {
        guard !isBool(v), let x = (v as? NSNumber)?.doubleValue else { throw fail(key, "expected a number, got \(v)") }
        if positive && x <= 0 { throw fail(key, "must be > 0, got \(v)") }
        return x
    }

    func object(_ key: String) throws -> Fields {
        guard let o = try require(key) as? [String: Any] else { throw fail(key, "expected an object") }
        return Fields(o, at(key), whereFile)
    }

    /// A runtime field naming a bundle file.
    @discardableResult
    func path(_ key: String) throws -> String {
        let name = try string(key)
        if let problem = Manifest.pathProblem(name) { throw fail(key, problem) }
        return name
    }

    func parse(_ version: String) throws -> Manifest {
        try closed(Manifest.TOP_LEVEL)
        if version != "0" { _ = try string("spec_version", "[0-9]+\\.[0-9]+") }
        let format = try string("format")
        if !Manifest.FORMATS.contains(format) {
            throw fail("format", "'\(format)' is not one of \(Manifest.FORMATS.joined(separator: ", "))")
        }
        _ = try object("quantization")
        let image = try object("image")
        try image.closed(["size", "mean", "std", "resize", "rescale"])
        if try image.string("resize") != "bicubic" { throw image.fail("resize", "only 'bicubic' is defined") }
        let preprocess = Preprocess(
            size: try image.int("size", 1, 8192),
            mean: try image.numbers("mean", 3),
            std: try image.numbers("std", 3, positive: true),
            rescale: try image.number("rescale", positive: true)
        )
        let p = try object("prompt")
        try p.closed(["template", "image_placeholder", "image_tokens", "bos_id", "eos_id", "pad_id", "add_bos"])
        if try p.string("image_placeholder") != IMAGE_PLACEHOLDER {
            throw p.fail("image_placeholder", "must be '\(IMAGE_PLACEHOLDER)'")
        }
        let t = try p.object("template")
        try t.closed(["name", "system", "user", "assistant", "answer_prefix", "image_last"])
        let template = Template(name: try t.string("name"), system: try t.string("system"), user: try t.string("user"),
                                assistant: try t.string("assistant"), answerPrefix: try t.string("answer_prefix"),
                                imageLast: try t.bool("image_last"))
        let prompt = PromptSpec(template: template, imageTokens: try p.int("image_tokens", 1), bosId: try p.int("bos_id", 0),
                                eosId: try p.int("eos_id", 0), padId: try p.int("pad_id", 0), addBos: try p.bool("add_bos"))
        let maxContext = try int("max_context", 1)
        let runtime = try object("runtime")
        for key in Manifest.RUNTIME_REQUIRED[format]! {
            if Manifest.RUNTIME_PATHS.contains(key) { try runtime.path(key) } else { _ = try runtime.require(key) }
        }
        let filesSection = try object("files")
        var files: [String: FileEntry] = [:]
        for name in filesSection.obj.keys.sorted() {
            let entry = try filesSection.object(name)
            try entry.closed(["sha256", "bytes"])
            files[name] = FileEntry(sha256: try entry.string("sha256", "[0-9a-f]{64}"), bytes: Int64(try entry.int("bytes", 0)))
        }
        if files[ModelBundle.TOKENIZER] == nil {
            throw filesSection.fail(ModelBundle.TOKENIZER, "not listed: every bundle carries its tokenizer")
        }
        return Manifest(specVersion: version, format: format, preprocess: preprocess, prompt: prompt,
                        maxContext: maxContext, runtime: runtime.obj, files: files)
    }
}

/// JSONSerialization gives booleans as NSNumber too: tell them apart by their Core Foundation type.
func isBool(_ v: Any) -> Bool {
    guard let n = v as? NSNumber else { return false }
    return CFGetTypeID(n) == CFBooleanGetTypeID()
}

/// Lower-case hex sha256 of a file, read in 1 MiB blocks.
public func sha256(_ file: URL) throws -> String {
    let handle = try FileHandle(forReadingFrom: file)
    defer { try? handle.close() }
    var hasher = SHA256()
    while let block = try handle.read(upToCount: 1 << 20), !block.isEmpty { hasher.update(data: block) }
    return hex(hasher.finalize())
}

public func sha256(_ bytes: [UInt8]) -> String { hex(SHA256.hash(data: bytes)) }

private func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
    digest.map { String(format: "%02x", $0) }.joined()
}
