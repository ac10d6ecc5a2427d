import EdgeVLMKit
import PhotosUI
import SwiftUI

/// One screen: pick a bundle (copied into Documents/bundles, README.md), pick a photo, ask, and watch the answer
/// stream with its time to first token and decode speed. Everything but the widgets is EdgeVLMKit.
struct ContentView: View {
    private let bundlesDir = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
        .appendingPathComponent("bundles")
    @State private var names: [String] = []
    @State private var chosen: String?
    @State private var item: PhotosPickerItem?
    @State private var photo: Photo?
    @State private var question = "Describe the image."
    @State private var answer = ""
    @State private var status = ""

    var body: some View {
        ScrollView {
            VStack(alignment: .leading, spacing: 12) {
                Text("Bundle").font(.headline)
                ForEach(names, id: \.self) { name in
                    Button(name == chosen ? "● \(name)" : name) { chosen = name }
                }
                PhotosPicker("Pick a photo", selection: $item, matching: .images)
                if let photo {
                    // display only: the model gets EdgeVLMKit's resize of photo.rgb
                    Image(decorative: photo.cgImage, scale: 1).resizable().scaledToFit().frame(maxHeight: 200)
                }
                TextField("Question", text: $question).textFieldStyle(.roundedBorder)
                Button("Ask", action: ask).disabled(chosen == nil || photo == nil)
                Text(answer).font(.body)
                Text(status).font(.footnote)
            }
            .padding()
        }
        .onAppear(perform: listBundles)
        .onChange(of: item) { _, newItem in
            Task {
                guard let data = try? await newItem?.loadTransferable(type: Data.self) else { return }
                do { photo = try Photo(data: data) } catch { status = "\(error)" }
            }
        }
    }

    private func listBundles() {
        names = ((try? FileManager.default.contentsOfDirectory(atPath: bundlesDir.path)) ?? []).sorted()
        if names.isEmpty { status = "No bundles in \(bundlesDir.path): see README.md" }
    }

    private func ask() {
        guard let chosen, let photo else { return }
        let dir = bundlesDir.appendingPathComponent(chosen)
        let question = question
        answer = ""
        status = "running…"
        Task.detached {
            let line: String
            do {
                let bundle = try ModelBundle.open(dir)
                let backend = try Backends.open(bundle)
                let a = try Generator(bundle: bundle, backend: backend).answer(
                    question, rgb: photo.rgb, width: photo.width, height: photo.height
                ) { _, text in Task { @MainActor in answer = text } }
                line = String(format: "TTFT %.0f ms · %.1f tokens/s · %d tokens", a.ttftMs, a.tokensPerSecond, a.ids.count)
                await MainActor.run { answer = a.text }
            } catch {
                line = "\(error)"
            }
            await MainActor.run { status = line }
        }
    }
}
