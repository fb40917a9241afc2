import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneData
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneTrainer

/// Flags of image tasks (used when --model names a ViT). --data takes `fashion-mnist-1k` or a
/// folder of Fashion-MNIST IDX files; --seed draws the 800/200 split.
public struct ImageTaskOptions: ParsableArguments {
    @Option(help: "Image side in pixels, a multiple of 14 (the ViT's patch): 224 as DINOv2 was trained; smaller is much cheaper on a CPU (tokens = (size/14)^2 + 1).")
    var imageSize: Int = 224
    @Option(help: "Evaluate on a stratified sample of this many test images (0 = the full 10,000).")
    var testLimit: Int = 0

    public init() {}

    public func validate() throws {
        guard imageSize >= 14, imageSize % 14 == 0 else {
            throw ValidationError("--image-size \(imageSize) is not a positive multiple of 14 (the ViT's patch size)")
        }
        guard testLimit >= 0 else { throw ValidationError("--test-limit must be >= 0") }
    }
}

/// The Fashion-MNIST-1k splits as `ImageSplit`s that preprocess a batch at a time.
struct ImageSplits {
    var labels: [String]
    var imageSize: Int
    var train: ImageSplit, validation: ImageSplit, test: ImageSplit

    /// The Fashion-MNIST train and test sets of `data`: `fashion-mnist-1k` (the Debian asset,
    /// fetched on first use; also what the text default `tweets` means for an image model) or a
    /// folder with the four Fashion-MNIST IDX files (gzip or not).
    static func loadSets(data: String, log: (String) -> Void) throws -> (folder: String, train: ImageSet, test: ImageSet) {
        let folder: String
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: data, isDirectory: &isDir), isDir.boolValue {
            folder = data
        } else if ["fashion-mnist-1k", "fashion-mnist", "tweets"].contains(data) {
            let store = AssetStore()
            let asset = AssetCatalog.fashionMNIST.name
            _ = try store.fetch(asset) { if case .downloading = $0 { log("fetching \(asset) ...") } }
            folder = try store.path(of: asset, file: .trainImages).deletingLastPathComponent().path
        } else {
            throw ValidationError("--data \(data): not a folder of Fashion-MNIST IDX files and not a known image data set (known: fashion-mnist-1k)")
        }
        let (train, test) = try FashionMNIST.load(directory: folder)
        return (folder, train, test)
    }

    /// The split: `trainPerClass` + `validationPerClass` images per class drawn from the training
    /// set with `seed`; the test set whole, or a stratified sample of `testLimit`.
    static func load(data: String, imageSize: Int, seed: UInt64, testLimit: Int, trainPerClass: Int = 80,
                     validationPerClass: Int = 20, log: (String) -> Void) throws -> ImageSplits {
        guard imageSize >= 14, imageSize % 14 == 0 else {
            throw ValidationError("--image-size \(imageSize) is not a positive multiple of 14 (the ViT's patch size)")
        }
        let (folder, full, testSet) = try loadSets(data: data, log: log)
        let (tr, va) = try FashionMNIST.fewShotSplit(full, trainPerClass: trainPerClass, validationPerClass: validationPerClass, seed: seed)
        var te = Array(0..<testSet.count)
        if testLimit > 0 && testLimit < testSet.count { te = stratifiedSample(testSet, testLimit, seed: seed &+ 2) }
        let pre = ImagePreprocessor(size: imageSize)
        let tokens = ImageSplit.tokens(size: imageSize)
        func split(_ set: ImageSet, _ idx: [Int]) -> ImageSplit {
            ImageSplit(labels: idx.map { Int(set.labels[$0]) }, tokens: tokens) { rows in
                MemoryLedger.withCategory(.activations) { pre.batch(set, rows.map { idx[$0] }) }
            }
        }
        log("data: Fashion-MNIST from \(folder): \(full.count) train / \(testSet.count) test images, \(full.height)x\(full.width) grey")
        log("split (seed \(seed)): \(tr.count) train, \(va.count) validation (stratified), \(te.count) test\(te.count < testSet.count ? " (stratified sample of \(testSet.count); --test-limit 0 for all)" : " (the full test set)"); images resized to \(imageSize)x\(imageSize) (\(tokens) tokens)")
        return ImageSplits(labels: FashionMNIST.classNames, imageSize: imageSize, train: split(full, tr), validation: split(full, va),
                           test: split(testSet, te))
    }

    /// `n` indices of `set` with the classes in proportion (each class shuffled with `seed`), ascending.
    static func stratifiedSample(_ set: ImageSet, _ n: Int, seed: UInt64) -> [Int] {
        var rng = SplitMix64(seed: seed)
        let byClass = set.indicesByClass(classes: 10)
        var out: [Int] = []
        for (c, var members) in byClass.enumerated() {
            rng.shuffle(&members)
            // Largest-remainder shares so the total is exactly n.
            let share = n * (c + 1) / byClass.count - n * c / byClass.count
            out += members.prefix(share)
        }
        return out.sorted()
    }
}
