// swift-tools-version: 6.0
import PackageDescription

// No build flags: the hot kernels are C compiled for each instruction set with function-level
// target attributes and chosen at run time (Sources/CSideTuneKernels/include/isa.h), so the
// package builds as a versioned dependency and its binaries run on any x86-64 (and arm64).

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
        // `swift package generate-documentation` (DocC) for the library products.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // Layer 1: tensors, kernels, autograd tape, memory ledger, quantisation.
        .target(name: "CSideTuneKernels", exclude: ["activation_codes_tables.h", "attention_narrow_body.h", "rowkernels_body.h", "vecmath_body.h"]),
        .target(name: "SideTuneEngine", dependencies: ["CSideTuneKernels"]),
        // Layer 2: modules, layers, optimizers, schedules.
        .target(name: "SideTuneNN", dependencies: ["SideTuneEngine", "CSideTuneKernels"]),
        // Layer 3: tokenizers and data sets.
        .target(name: "SideTuneTokenizers", dependencies: ["SideTuneEngine", "SideTuneFormats"]),
        .target(name: "CSideTuneGzip", linkerSettings: [.linkedLibrary("z")]),
        // JPEG and PNG decoding through the system's libjpeg-turbo and libpng (Debian:
        // libjpeg62-turbo-dev, libpng-dev); their longjmp error handling stays in C.
        .target(name: "CSideTuneImage", linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png16")]),
        .target(name: "SideTuneData", dependencies: ["SideTuneEngine", "CSideTuneGzip", "CSideTuneImage"]),
        // Layer 3: model formats and named assets.
        .target(name: "SideTuneFormats", dependencies: ["SideTuneEngine"]),
        .target(name: "CSideTuneSHA256"),
        .target(name: "SideTuneAssets", dependencies: [
            "CSideTuneSHA256", .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ]),
        // Layer 4: pretrained backbones (a file per model).
        .target(name: "SideTuneBackbones", dependencies: [
            "SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneTokenizers",
        ]),
        // Layer 5: side-tuning methods and the trainer.
        .target(name: "SideTuneMethods", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneBackbones", "SideTuneTokenizers"]),
        // Helpers shared by the test targets (gradient checks).
        .target(name: "SideTuneTestSupport", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneBackbones", "SideTuneMethods", "SideTuneFormats",
                                                            "SideTuneTokenizers"]),
        .target(name: "SideTuneTrainer", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneBackbones",
                                                        "SideTuneMethods", "SideTuneTokenizers"]),
        .target(name: "SideTune", dependencies: ["SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneTokenizers", "SideTuneData",
                                                 "SideTuneBackbones", "SideTuneMethods", "SideTuneTrainer"]),
        // Layer 6: command implementations (a library so tests can drive them).
        .target(name: "SideTuneCLI", dependencies: [
            "SideTuneEngine", "SideTuneNN", "SideTuneTrainer", "SideTuneMethods", "SideTuneBackbones", "SideTuneData",
            "SideTuneTokenizers", "SideTuneAssets", "SideTuneFormats",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Swift 5 mode for main.swift alone: it sets stdout line-buffered (C globals are off limits in 6).
        .executableTarget(name: "sidetune", dependencies: ["SideTuneCLI"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "SideTuneEngineTests", dependencies: ["SideTuneEngine", "SideTuneTestSupport", "CSideTuneKernels"]),
        .testTarget(name: "SideTuneNNTests", dependencies: ["SideTuneEngine", "SideTuneNN"]),
        .testTarget(name: "SideTuneTokenizersTests", dependencies: ["SideTuneTokenizers", "SideTuneFormats", "SideTuneTestSupport"], exclude: ["Goldens"],
                    ),
        .testTarget(name: "SideTuneDataTests", dependencies: ["SideTuneData", "SideTuneEngine", "SideTuneTestSupport"], exclude: ["Goldens"]),
        .testTarget(name: "SideTuneFormatsTests", dependencies: ["SideTuneFormats", "SideTuneEngine"]),
        .testTarget(name: "SideTuneAssetsTests", dependencies: [
            "SideTuneAssets", "SideTuneTestSupport", .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ]),
        .testTarget(name: "SideTuneBackbonesTests", dependencies: [
            "SideTuneBackbones", "SideTuneEngine", "SideTuneNN", "SideTuneFormats", "SideTuneTokenizers", "SideTuneData",
            "SideTuneTestSupport",
        ], exclude: ["Goldens"]),
        .testTarget(name: "SideTuneMethodsTests", dependencies: ["SideTuneMethods", "SideTuneTestSupport", "SideTuneBackbones", "SideTuneEngine",
                                                               "SideTuneNN", "SideTuneTokenizers", "SideTuneFormats"],
                    exclude: ["Goldens"]),
        .testTarget(name: "SideTuneTrainerTests", dependencies: ["SideTuneTrainer", "SideTuneMethods", "SideTuneTestSupport",
                                                               "SideTuneBackbones", "SideTuneEngine", "SideTuneNN", "SideTuneTokenizers"],
                    ),
        .testTarget(name: "SideTuneCLITests", dependencies: ["SideTuneCLI", "SideTuneAssets", "SideTuneMethods", "SideTuneBackbones", "SideTuneTrainer",
                                                            "SideTuneTestSupport", "SideTuneFormats", "SideTuneEngine"]),
    ]
)
