import XCTest
@testable import EdgeVLMKit

/// Bad bundles: each is refused with one line naming the file and the problem (docs/bundle-spec.md section 2).
final class ManifestTests: XCTestCase {
    var dir: URL!
    var manifestFile: URL { dir.appendingPathComponent(ModelBundle.MANIFEST) }

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgevlm-bundle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let golden = Goldens.dir.appendingPathComponent("bundles/gguf-q4_0")
        for name in try FileManager.default.contentsOfDirectory(atPath: golden.path) {
            try FileManager.default.copyItem(at: golden.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private func edit(_ change: (inout [String: Any]) -> Void) throws {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: manifestFile)) as! [String: Any]
        change(&json)
        try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted]).write(to: manifestFile)
    }

    private func refused(_ file: URL, _ words: String..., line: UInt = #line) {
        do {
            _ = try ModelBundle.open(dir)
            XCTFail("opened a bad bundle; expected: \(words.joined(separator: " "))", line: line)
        } catch let e as EdgeVLMError {
            XCTAssertFalse(e.description.contains("\n"), "one line: \(e)", line: line)
            XCTAssertEqual(e.file?.path, file.path, e.description, line: line)
            for w in words { XCTAssertTrue(e.description.contains(w), "'\(w)' in: \(e)", line: line) }
        } catch {
            XCTFail("not an EdgeVLMError: \(error)", line: line)
        }
    }

    func testGoodBundleOpens() throws {
        XCTAssertEqual(try ModelBundle.open(dir).manifest.format, "gguf")
    }

    func testLegacyManifestWithoutVersionOpens() throws {
        try edit { $0.removeValue(forKey: "spec_version") }
        XCTAssertEqual(try ModelBundle.open(dir).manifest.specVersion, "0")
    }

    func testUnknownMajorVersion() throws {
        try edit { $0["spec_version"] = "2.0" }
        refused(manifestFile, "spec_version '2.0' is not one this edgevlm reads (0, 1.x)")
    }

    func testNotJson() throws {
        try Data("{\"format\": ".utf8).write(to: manifestFile)
        refused(manifestFile, "not valid JSON")
        try Data("[1, 2]".utf8).write(to: manifestFile)
        refused(manifestFile, "not a manifest")
    }

    func testPathsOutsideTheBundle() throws {
        let entry: [String: Any] = ["sha256": String(repeating: "0", count: 64), "bytes": 1]
        for name in ["../x", "/etc/passwd", "a\\b", "./tokenizer.json", "a//b", "C:/x", ""] {
            try edit { m in var files = m["files"] as! [String: Any]; files[name] = entry; m["files"] = files }
            refused(manifestFile, "file name", name.isEmpty ? "''" : name)
            try edit { m in var files = m["files"] as! [String: Any]; files.removeValue(forKey: name); m["files"] = files }
        }
    }

    func testSymlinkOutOfTheBundle() throws {
        let outside = FileManager.default.temporaryDirectory.appendingPathComponent("edgevlm-outside-\(UUID().uuidString).bin")
        try Data("x".utf8).write(to: outside)
        defer { try? FileManager.default.removeItem(at: outside) }
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("link.bin"), withDestinationURL: outside)
        let digest = try sha256(outside)
        try edit { m in var files = m["files"] as! [String: Any]; files["link.bin"] = ["sha256": digest, "bytes": 1]; m["files"] = files }
        refused(manifestFile, "link.bin", "outside the bundle")
    }

    private func section(_ m: inout [String: Any], _ key: String, _ change: (inout [String: Any]) -> Void) {
        var s = m[key] as! [String: Any]
        change(&s)
        m[key] = s
    }

    func testSchemaViolations() throws {
        let cases: [(String, (inout [String: Any]) -> Void)] = [
            ("image.size: required", { m in self.section(&m, "image") { $0.removeValue(forKey: "size") } }),
            ("max_context: expected an integer", { $0["max_context"] = "256" }),
            ("image.size: expected an integer", { m in self.section(&m, "image") { $0["size"] = 2.5 } }),
            ("image.mean: expected 3 numbers", { m in self.section(&m, "image") { $0["mean"] = [0.5, 0.5] } }),
            ("image.std: must be > 0", { m in self.section(&m, "image") { $0["std"] = [0.5, 0, 0.5] } }),
            ("image.resize", { m in self.section(&m, "image") { $0["resize"] = "bilinear" } }),
            ("colour: unknown key", { $0["colour"] = "red" }),
            ("prompt.template.extra: unknown key", { m in self.section(&m, "prompt") { p in self.section(&p, "template") { $0["extra"] = "" } } }),
            ("prompt.add_bos: expected true or false", { m in self.section(&m, "prompt") { $0["add_bos"] = "yes" } }),
            ("prompt.image_placeholder", { m in self.section(&m, "prompt") { $0["image_placeholder"] = "<img>" } }),
            ("format: 'tflite' is not one of", { $0["format"] = "tflite" }),
            ("runtime.mmproj: required", { m in self.section(&m, "runtime") { $0.removeValue(forKey: "mmproj") } }),
            ("tokenizer.json: not listed", { m in self.section(&m, "files") { $0.removeValue(forKey: "tokenizer.json") } }),
            ("files.tokenizer.json.sha256", { m in self.section(&m, "files") { f in self.section(&f, "tokenizer.json") { $0["sha256"] = "ABC" } } }),
        ]
        let good = try Data(contentsOf: manifestFile)
        for (words, change) in cases {
            try edit(change)
            refused(manifestFile, words)
            try good.write(to: manifestFile)
        }
    }

    func testFilesCheckedAgainstTheManifest() throws {
        let tokenizer = dir.appendingPathComponent(ModelBundle.TOKENIZER)
        let good = try Data(contentsOf: tokenizer)
        try (good + Data(" ".utf8)).write(to: tokenizer)
        refused(tokenizer, "truncated or replaced")
        var modified = good
        modified[10] = modified[10] &+ 1
        try modified.write(to: tokenizer)
        refused(tokenizer, "the file was modified")
        try FileManager.default.removeItem(at: tokenizer)
        refused(tokenizer, "missing")
    }

    func testOnlyListedFilesOpen() throws {
        let bundle = try ModelBundle.open(dir)
        XCTAssertEqual(try bundle.file("model-q4_0.gguf"), dir.appendingPathComponent("model-q4_0.gguf"))
        XCTAssertThrowsError(try bundle.file("other.gguf")) { e in
            XCTAssertTrue("\(e)".contains("lists no file 'other.gguf'"))
        }
    }
}
