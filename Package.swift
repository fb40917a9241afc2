// swift-tools-version: 6.0
import PackageDescription

// The hot kernels need the CPU's vector features: without them Swift's SIMD FMAs become library
// calls (measured: 1.4 GFLOPS instead of 100+). -Ounchecked drops bounds checks in inner loops.
let fast: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-Xcc", "-march=native"])]

let package = Package(
    name: "SideTune",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sidetune", targets: ["sidetune"]),
        // The library: `import SideTune` re-exports every layer below; each is a product too.
        .library(name: "SideTune", targets: ["SideTune"]),
        .library(name: "SideTuneEngine", targets: ["SideTuneEngine"]),
        .library(name: "SideTuneNN", targets: ["SideTuneNN"]),
        .library(name: "SideTuneFormats", targets: ["SideTuneFormats"]),
        .library(name: "SideTuneTokenizers", targets: ["SideTuneTokenizers"]),
        .library(name: "SideTuneBackbones", targets: ["SideTuneBackbones"]),
        .library(name: "SideTuneMethods", targets: ["SideTuneMethods"]),
        .library(name: "SideTuneTrainer", targets: ["SideTuneTrainer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
    ],
    targets: [
        // Layer 1: tensors, kernels, autograd tape, memory ledger, quantisation.
        .target(name: "CSideTuneKernels", cSettings: [.unsafeFlags(["-O3", "-march=native"])]),
        .target(name: "SideTuneEngine", dependencies: ["CSideTuneKernels"], swiftSettings: fast),
        // Layer 2: modules, layers, optimizers, schedules.
        .target(name: "SideTuneNN", dependencies: ["SideTuneEngine", "CSideTuneKernels"], swiftSettings: fast),
        // Layer 3: tokenizers and data sets.
        .target(name: "SideTuneTokenizers", dependencies: ["SideTuneEngine", "SideTuneFormats"], swiftSettings: fast),
        .target(name: "CSideTuneGzip", cSettings: [.unsafeFlags(["-O2"])], linkerSettings: [.linkedLibrary("z")]),
        .target(name: "SideTuneData", dependencies: ["SideTuneEngine", "CSideTuneGzip"], swiftSettings: fast),
        // Layer 3: model formats and named assets.
        .target(name: "SideTuneFormats", dependencies: ["SideTuneEngine"], swiftSettings: fast),
        .target(name: "CSideTuneSHA256", cSettings: [.unsafeFlags(["-O3", "-march=native"])]),
        .target(name: "SideTuneAssets", dependencies: [
            "CSideTuneSHA256", .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ], swiftSettings: fast),
        // Layer 4: pretrained backbones (a file per model).
        .target(name: "SideTuneBackbones", dependencies: [
            "SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneTokenizers",
        ], swiftSettings: fast),
        // Layer 5: side-tuning methods and the trainer.
        .target(name: "SideTuneMethods", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneBackbones", "SideTuneTokenizers"],
                swiftSettings: fast),
        // Helpers shared by the test targets (gradient checks).
        .target(name: "SideTuneTestSupport", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneBackbones", "SideTuneMethods",
                                                            "SideTuneTokenizers"], swiftSettings: fast),
        .target(name: "SideTuneTrainer", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneBackbones",
                                                        "SideTuneMethods", "SideTuneTokenizers"], swiftSettings: fast),
        .target(name: "SideTune", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneTokenizers", "SideTuneData",
                                                 "SideTuneBackbones", "SideTuneMethods", "SideTuneTrainer"], swiftSettings: fast),
        // Layer 6: command implementations (a library so tests can drive them).
        .target(name: "SideTuneCLI", dependencies: [
            "SideTuneEngine", "SideTuneNN", "SideTuneTrainer", "SideTuneMethods", "SideTuneBackbones", "SideTuneData",
            "SideTuneTokenizers", "SideTuneAssets", "SideTuneFormats",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: fast),
        .executableTarget(name: "sidetune", dependencies: ["SideTuneCLI"], swiftSettings: fast),
        .testTarget(name: "SideTuneEngineTests", dependencies: ["SideTuneEngine", "SideTuneTestSupport", "CSideTuneKernels"], swiftSettings: fast),
        .testTarget(name: "SideTuneNNTests", dependencies: ["SideTuneEngine", "SideTuneNN"], swiftSettings: fast),
        .testTarget(name: "SideTuneTokenizersTests", dependencies: ["SideTuneTokenizers", "SideTuneFormats", "SideTuneTestSupport"], exclude: ["Goldens"],
                    swiftSettings: fast),
        .testTarget(name: "SideTuneDataTests", dependencies: ["SideTuneData", "SideTuneEngine", "SideTuneTestSupport"], swiftSettings: fast),
        .testTarget(name: "SideTuneFormatsTests", dependencies: ["SideTuneFormats", "SideTuneEngine"], swiftSettings: fast),
        .testTarget(name: "SideTuneAssetsTests", dependencies: [
            "SideTuneAssets", .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ], swiftSettings: fast),
        .testTarget(name: "SideTuneBackbonesTests", dependencies: [
            "SideTuneBackbones", "SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneTokenizers", "SideTuneData",
            "SideTuneTestSupport",
        ], exclude: ["Goldens"], swiftSettings: fast),
        .testTarget(name: "SideTuneMethodsTests", dependencies: ["SideTuneMethods", "SideTuneTestSupport", "SideTuneBackbones", "SideTuneEngine",
                                                               "SideTuneNN", "SideTuneTokenizers", "SideTuneFormats"],
                    exclude: ["Goldens"], swiftSettings: fast),
        .testTarget(name: "SideTuneTrainerTests", dependencies: ["SideTuneTrainer", "SideTuneMethods", "SideTuneTestSupport",
                                                               "SideTuneBackbones", "SideTuneEngine", "SideTuneNN", "SideTuneTokenizers"],
                    swiftSettings: fast),
        .testTarget(name: "SideTuneCLITests", dependencies: ["SideTuneCLI", "SideTuneAssets", "SideTuneMethods", "SideTuneBackbones", "SideTuneTrainer"], swiftSettings: fast),
    ]
)
