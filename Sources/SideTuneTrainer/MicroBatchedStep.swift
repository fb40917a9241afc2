import SideTuneEngine
import SideTuneMethods

extension TrainableModel {
    /// Whether the trainer (and `bench step`) run this model's steps as micro-batches: its examples
    /// are independent, and it is not full fine-tuning, whose parts would each hold a copy of
    /// every weight's gradient.
    public var runsAsMicroBatches: Bool { examplesAreIndependent && method != .full }
}

/// Cuts a batch into `parts` runs of consecutive examples with about equal token counts (a step
/// costs about its tokens): the k-th cut falls at the example boundary whose running token count
/// is nearest k/parts of the total, so each cut is within half an example of its share (unless
/// leaving one example for every later part forces it further). Never returns an empty part;
/// fewer parts when the batch has fewer examples.
public func cutByTokens(_ examples: [Int], parts: Int, tokens: (Int) -> Int) -> [[Int]] {
    let parts = min(max(parts, 1), examples.count)
    guard parts > 1 else { return [examples] }
    var prefix = [0]   // prefix[i]: tokens of examples[0..<i]
    for e in examples { prefix.append(prefix.last! + tokens(e)) }
    let total = prefix.last!, n = examples.count
    var out: [[Int]] = [], start = 0
    for k in 1..<parts {
        // Candidates leave at least one example in this part and in each later one.
        let candidates = (start + 1)...(n - (parts - k))
        let cut = candidates.min { abs(prefix[$0] * parts - total * k) < abs(prefix[$1] * parts - total * k) }!
        out.append(Array(examples[start..<cut]))
        start = cut
    }
    out.append(Array(examples[start...]))
    return out
}

/// Forward and backward of one batch run as micro-batches on the pool's threads
/// (`MicroBatches.run`). `loss(part)` is a part's mean loss over its targets; each is weighted by
/// its share of the targets (`targets(part)`, by default its examples), so the gradients are
/// those of the whole batch's mean loss (up to float summation order). Returns that mean loss.
public func microBatchedBackward(_ parts: [[Int]], targets: ([Int]) -> Int = { $0.count }, loss: ([Int]) -> Tensor) -> Float {
    let counts = parts.map(targets)
    let total = counts.reduce(0, +)
    var losses = [Float](repeating: 0, count: parts.count)
    losses.withUnsafeMutableBufferPointer { out in
        MicroBatches.run(parts.count) { i in
            let weighted = loss(parts[i]) * (Float(counts[i]) / Float(total))
            weighted.backward()
            out[i] = weighted.item()
        }
    }
    return losses.reduce(0, +)
}
