import SideTuneEngine

/// Fashion-MNIST (Debian `dataset-fashion-mnist`: four IDX gzip files) and the few-shot
/// "Fashion-MNIST-1k" split used for side-tuning experiments.
public enum FashionMNIST {
    public static let classNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    public static let trainFiles = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    public static let testFiles = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

    /// (60k training set, 10k test set) from a folder holding the four files.
    public static func load(directory: String) throws -> (train: ImageSet, test: ImageSet) {
        let train = try IDX.load(images: directory + "/" + trainFiles.0, labels: directory + "/" + trainFiles.1)
        let test = try IDX.load(images: directory + "/" + testFiles.0, labels: directory + "/" + testFiles.1)
        for (set, file) in [(train, trainFiles.1), (test, testFiles.1)] {
            if let bad = set.labels.first(where: { $0 < 0 || $0 >= 10 }) {
                throw DataError(file: directory + "/" + file, "label \(bad) is outside 0-9")
            }
        }
        return (train, test)
    }

    /// Fashion-MNIST-1k: `trainPerClass` + `validationPerClass` images of each class drawn without
    /// replacement from the training set (each class shuffled with `seed`; the first ones go to
    /// train, the next to validation), plus the full test set. Defaults: 80 + 20 per class ->
    /// 800 train, 200 validation. Indices within each split ascending.
    public static func fewShotSplit(_ train: ImageSet, trainPerClass: Int = 80, validationPerClass: Int = 20,
                                    classes: Int = 10, seed: UInt64 = 0) throws -> (train: [Int], validation: [Int]) {
        var rng = SplitMix64(seed: seed)
        var tr: [Int] = [], va: [Int] = []
        for (c, var members) in train.indicesByClass(classes: classes).enumerated() {
            guard members.count >= trainPerClass + validationPerClass else {
                throw DataError(file: "<training set>", "class \(c) has \(members.count) images, \(trainPerClass + validationPerClass) needed")
            }
            rng.shuffle(&members)
            tr += members[0..<trainPerClass]
            va += members[trainPerClass..<(trainPerClass + validationPerClass)]
        }
        return (tr.sorted(), va.sorted())
    }

    /// Fashion-MNIST-1k as image sets: 800 train + 200 validation (stratified from the 60k training
    /// images with `seed`) and the full 10k test set.
    public static func fewShot(directory: String, trainPerClass: Int = 80, validationPerClass: Int = 20,
                               seed: UInt64 = 0) throws -> (train: ImageSet, validation: ImageSet, test: ImageSet) {
        let (full, test) = try load(directory: directory)
        let (tr, va) = try fewShotSplit(full, trainPerClass: trainPerClass, validationPerClass: validationPerClass, seed: seed)
        return (full.subset(tr), full.subset(va), test)
    }
}
