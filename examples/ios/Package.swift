// swift-tools-version:5.10
// EdgeVLMKit: the edgevlm bundle spec (docs/bundle-spec.md) in Swift, a line-for-line sibling of the Android
// sample's Kotlin core (examples/android/core: same names, same golden tests), plus a Core ML backend.
import PackageDescription

let package = Package(
    name: "EdgeVLMKit",
    platforms: [.iOS(.v18), .macOS(.v15)], // Core ML state (MLState) and multifunction models
    products: [.library(name: "EdgeVLMKit", targets: ["EdgeVLMKit"])],
    targets: [
        .target(name: "EdgeVLMKit"),
        .testTarget(name: "EdgeVLMKitTests", dependencies: ["EdgeVLMKit"]),
    ]
)
