import SwiftUI

@main
struct EdgeVLMApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}
