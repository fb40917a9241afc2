// swift-tools-version: 6.0
import Foundation
import PackageDescription

// libFuzzer targets for SideTune's parsers and loaders: one executable per input format, each
// defining LLVMFuzzerTestOneInput. Build and run them with ./run.sh (see README.md); built by hand:
//   swift build -c release -Xswiftc -sanitize=fuzzer,address \
//     -Xcc -fsanitize=fuzzer-no-link -Xcc -fsanitize=address
// Nothing depends on this package, so unsafeFlags are fine here.

// A path dependency's identity is its folder's name: "main" here, whatever a clone is called elsewhere.
let parent = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent.lowercased()
func lib(_ name: String) -> Target.Dependency { .product(name: name, package: parent) }

let targets: [(name: String, deps: [Target.Dependency])] = [
    ("safetensors", [lib("SideTuneFormats")]),
    ("gguf", [lib("SideTuneFormats"), lib("SideTuneBackbones"),
              lib("SideTuneTokenizers")]),
    ("onnx", [lib("SideTuneFormats"), lib("SideTuneBackbones")]),
    ("bert-config", [lib("SideTuneBackbones")]),
    ("hf-config", [lib("SideTuneBackbones")]),
    ("tokenizer-json", [lib("SideTuneTokenizers")]),
    ("vocab", [lib("SideTuneTokenizers")]),
    ("textdata", [lib("SideTune")]),
    ("idx", [lib("SideTune")]),
    ("checkpoint", [lib("SideTuneTrainer")]),
    ("image", [lib("SideTune")]),
]

let package = Package(
    name: "SideTuneFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(path: "..")],
    targets: [.target(name: "CFuzzDriver"), .target(name: "FuzzSupport", dependencies: ["CFuzzDriver"])] + targets.map { t in
        .executableTarget(name: "fuzz-\(t.name)", dependencies: ["FuzzSupport"] + t.deps,
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])])
    }
)
