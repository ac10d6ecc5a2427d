import Foundation

/// The one error a user sees: a problem with the input, as one line `path: problem` (edgevlm/errors.py's
/// EdgeVLMError), so an app can show it in a single text field.
public struct EdgeVLMError: Error, LocalizedError, CustomStringConvertible {
    public let problem: String
    public let file: URL?

    public init(_ problem: String, file: URL? = nil) {
        self.problem = problem
        self.file = file
    }

    public var description: String { file.map { "\($0.path): \(problem)" } ?? problem }
    public var errorDescription: String? { description }
}
