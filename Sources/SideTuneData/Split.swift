import SideTuneEngine

/// Row indices of a train/validation/test split, each ascending.
public struct DatasetSplit: Sendable, Equatable, Codable {
    public var train: [Int]
    public var validation: [Int]
    public var test: [Int]

    public init(train: [Int], validation: [Int], test: [Int]) {
        self.train = train
        self.validation = validation
        self.test = test
    }
}

/// Examples with integer class labels 0..<classCount: texts, image files. Splits and samples are
/// stratified by class.
public protocol LabelledData {
    var labels: [Int] { get }
    var classCount: Int { get }
}

extension TextDataset: LabelledData {
    public var classCount: Int { labelVocabulary.count }
}

extension LabelledData {
    /// Stratified split: each class is shuffled with `seed` and cut by the fractions, so every
    /// split keeps the class proportions (within one example per class). Per-class counts are
    /// `round(n * validation)` and `round(n * test)`; train gets the rest. Deterministic for a
    /// given data set and seed on every platform.
    public func stratifiedSplit(train: Double = 0.8, validation: Double = 0.1, test: Double = 0.1, seed: UInt64) -> DatasetSplit {
        precondition(train >= 0 && validation >= 0 && test >= 0 && abs(train + validation + test - 1) < 1e-9,
                     "split fractions must be >= 0 and sum to 1, got \(train), \(validation), \(test)")
        var rng = SplitMix64(seed: seed)
        var split = DatasetSplit(train: [], validation: [], test: [])
        for members in indicesByClass() {
            var shuffled = members
            rng.shuffle(&shuffled)
            let n = shuffled.count
            let nVal = min(n, Int((Double(n) * validation).rounded()))
            let nTest = min(n - nVal, Int((Double(n) * test).rounded()))
            split.validation += shuffled[0..<nVal]
            split.test += shuffled[nVal..<(nVal + nTest)]
            split.train += shuffled[(nVal + nTest)...]
        }
        split.train.sort()
        split.validation.sort()
        split.test.sort()
        return split
    }

    /// A stratified sample of at most `count` of `indices` (all rows if nil): class quotas are
    /// proportional (largest remainder), every present class keeps at least one example when
    /// `count` allows. Result ascending.
    public func stratifiedSample(_ count: Int, from indices: [Int]? = nil, seed: UInt64) -> [Int] {
        let pool = indices ?? Array(0..<labels.count)
        if count >= pool.count { return pool.sorted() }
        var byClass = [[Int]](repeating: [], count: classCount)
        for i in pool { byClass[labels[i]].append(i) }
        let present = byClass.indices.filter { !byClass[$0].isEmpty }
        var quota = [Int](repeating: 0, count: byClass.count)
        var remainders: [(Double, Int)] = []
        for c in present {
            let exact = Double(count) * Double(byClass[c].count) / Double(pool.count)
            quota[c] = Int(exact)
            remainders.append((exact - Double(quota[c]), c))
        }
        // Largest remainder first; ties by class id so the result does not depend on sort stability.
        remainders.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
        var left = count - quota.reduce(0, +)
        for (_, c) in remainders where left > 0 {
            quota[c] += 1
            left -= 1
        }
        if count >= present.count {
            // Give empty quotas one example, taken from the largest quotas.
            for c in present where quota[c] == 0 {
                if let donor = present.max(by: { quota[$0] < quota[$1] }), quota[donor] > 1 {
                    quota[donor] -= 1
                    quota[c] = 1
                }
            }
        }
        var rng = SplitMix64(seed: seed)
        var out: [Int] = []
        for c in present {
            var members = byClass[c]
            rng.shuffle(&members)
            out += members.prefix(quota[c])
        }
        return out.sorted()
    }

    /// Row indices of each class, ascending, indexed by class id.
    public func indicesByClass() -> [[Int]] {
        var byClass = [[Int]](repeating: [], count: classCount)
        for (i, l) in labels.enumerated() { byClass[l].append(i) }
        return byClass
    }
}

extension DatasetSplit {
    /// Each split reduced to at most `maxPerSplit` rows by stratified sampling, for quick demos.
    public func subset(maxPerSplit: Int, of dataset: some LabelledData, seed: UInt64) -> DatasetSplit {
        DatasetSplit(train: dataset.stratifiedSample(maxPerSplit, from: train, seed: seed),
                     validation: dataset.stratifiedSample(maxPerSplit, from: validation, seed: seed &+ 1),
                     test: dataset.stratifiedSample(maxPerSplit, from: test, seed: seed &+ 2))
    }
}
