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
    @Option(help: "Image side in pixels, a multiple of the ViT's patch (14 for DINOv2, 16 for most ViTs): 224 as they were trained; smaller is much cheaper on a CPU (tokens = (size/patch)^2 + 1).")
    var imageSize: Int = 224
    @Option(help: "Evaluate on a stratified sample of this many test images (0 = the full 10,000).")
    var testLimit: Int = 0

    public init() {}

    public func validate() throws {
        guard imageSize >= 1 && imageSize <= 4096 else { throw ValidationError("--image-size must be in 1...4096, got \(imageSize)") }
        guard testLimit >= 0 else { throw ValidationError("--test-limit must be >= 0") }
    }
}

/// An image task's splits as `ImageSplit`s that decode and preprocess a batch at a time: the
/// Fashion-MNIST-1k split, or image files (a class-folder tree, or a CSV of path,label) split by
/// the seed or given as fixed splits.
struct ImageSplits {
    var labels: [String]
    var imageSize: Int
    var train: ImageSplit, validation: ImageSplit, test: ImageSplit
    /// How images became input (checkpoints record it for eval and predict).
    var pipeline: ImagePipeline = .resize

    /// The task's splits: image files when --train-data is given or --data names a class-folder
    /// tree or a CSV, else Fashion-MNIST.
    static func load(_ task: TextTaskOptions, imageSize: Int, patch: Int, testLimit: Int, log: (String) -> Void) throws -> ImageSplits {
        guard imageSize >= patch, imageSize % patch == 0 else {
            throw ValidationError("--image-size \(imageSize) is not a positive multiple of the model's \(patch)-pixel patch")
        }
        if task.trainData != nil || namesImageFiles(task.data) {
            return try loadFiles(task, imageSize: imageSize, patch: patch, testLimit: testLimit, log: log)
        }
        guard task.trainLimit == 0, task.evalLimit == 0 else {
            throw ValidationError("--train-limit and --eval-limit are for text tasks and image files; Fashion-MNIST-1k uses its 800/200 split and --test-limit")
        }
        return try load(data: task.data, imageSize: imageSize, patch: patch, seed: task.seed, testLimit: testLimit, log: log)
    }

    /// Whether `data` is image files: a folder without Fashion-MNIST's IDX files, or a CSV.
    static func namesImageFiles(_ data: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: data, isDirectory: &isDir) else { return false }
        if !isDir.boolValue { return URL(fileURLWithPath: data).pathExtension.lowercased() == "csv" }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: data)) ?? []
        return !entries.contains { $0.hasPrefix("train-images-idx3-ubyte") }
    }

    static func loadFiles(_ task: TextTaskOptions, imageSize: Int, patch: Int, testLimit: Int, log: (String) -> Void) throws -> ImageSplits {
        func list(_ path: String) throws -> ImageFileList { try ImageFileList.load(URL(fileURLWithPath: path)) }
        var train: ImageFileList, validation: ImageFileList, test: ImageFileList
        let relabel = { (l: ImageFileList, classes: [String]) in l.relabelled(to: classes) }
        if let trainData = task.trainData {
            (train, validation, test) = fixedSplits(train: try list(trainData), validation: try task.validationData.map(list),
                                                    test: try task.testData.map(list), classes: \.classNames, seed: task.seed,
                                                    relabel: relabel, subset: { $0.subset($1) }, log: log)
        } else if let folders = ImageFileList.splitFolders(of: URL(fileURLWithPath: task.data)) {
            log("data: \(task.data) has split folders: \([folders.train, folders.validation, folders.test].compactMap { $0?.lastPathComponent }.joined(separator: ", "))")
            (train, validation, test) = fixedSplits(train: try ImageFileList.folder(folders.train),
                                                    validation: try folders.validation.map(ImageFileList.folder),
                                                    test: try folders.test.map(ImageFileList.folder), classes: \.classNames,
                                                    seed: task.seed, relabel: relabel, subset: { $0.subset($1) }, log: log)
        } else {
            let all = try list(task.data)
            let split = all.stratifiedSplit(seed: task.seed)
            (train, validation, test) = (all.subset(split.train), all.subset(split.validation), all.subset(split.test))
        }
        if task.trainLimit > 0 { train = train.subset(train.stratifiedSample(task.trainLimit, seed: task.seed)) }
        if task.evalLimit > 0 { validation = validation.subset(validation.stratifiedSample(task.evalLimit, seed: task.seed &+ 1)) }
        if testLimit > 0 { test = test.subset(test.stratifiedSample(testLimit, seed: task.seed &+ 2)) }
        guard train.paths.count > 0, validation.paths.count > 0, test.paths.count > 0 else {
            throw ValidationError("\(task.dataDescription): the split leaves \(train.paths.count) train, \(validation.paths.count) validation and \(test.paths.count) test images; each needs at least one")
        }
        // Every image decoded once now: a bad file is named before training, not in the middle of it.
        let t0 = Date()
        for part in [train, validation, test] { try part.check(minSide: patch) }
        let total = train.paths.count + validation.paths.count + test.paths.count
        log(String(format: "data: %d images of %d classes (%@) checked in %.1f s; split: %d train, %d validation, %d test",
                   total, train.classCount, train.classNames.prefix(12).joined(separator: ", "), Date().timeIntervalSince(t0),
                   train.paths.count, validation.paths.count, test.paths.count))
        let pre = CentreCropPreprocessor(size: imageSize), tokens = ImageSplit.tokens(size: imageSize, patch: patch)
        log("images: shorter side resized to \(pre.resizeSide) (bicubic, antialiased), centre \(imageSize)x\(imageSize) crop (\(tokens) tokens)")
        func split(_ files: ImageFileList) -> ImageSplit {
            ImageSplit(labels: files.labels, tokens: tokens) { rows in
                MemoryLedger.withCategory(.activations) {
                    do { return try pre.batch(rows.map { files.paths[$0] }) } catch {
                        ProcessExit.fail("\(error) (it was readable when the data was checked)", code: 1)
                    }
                }
            }
        }
        return ImageSplits(labels: train.classNames, imageSize: imageSize, train: split(train), validation: split(validation),
                           test: split(test), pipeline: .centreCrop)
    }

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
    static func load(data: String, imageSize: Int, patch: Int, seed: UInt64, testLimit: Int, trainPerClass: Int = 80,
                     validationPerClass: Int = 20, log: (String) -> Void) throws -> ImageSplits {
        let (folder, full, testSet) = try loadSets(data: data, log: log)
        let (tr, va) = try FashionMNIST.fewShotSplit(full, trainPerClass: trainPerClass, validationPerClass: validationPerClass, seed: seed)
        var te = Array(0..<testSet.count)
        if testLimit > 0 && testLimit < testSet.count { te = stratifiedSample(testSet, testLimit, seed: seed &+ 2) }
        let pre = ImagePreprocessor(size: imageSize)
        let tokens = ImageSplit.tokens(size: imageSize, patch: patch)
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
