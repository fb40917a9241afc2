import SideTuneEngine

/// Cuts a batch into `parts` runs of consecutive examples with about equal token counts (a side
/// network's step costs about its tokens). Never returns an empty part; fewer parts when the batch
/// has fewer examples.
public func cutByTokens(_ examples: [Int], parts: Int, tokens: (Int) -> Int) -> [[Int]] {
    let parts = min(max(parts, 1), examples.count)
    guard parts > 1 else { return [examples] }
    let total = examples.reduce(0) { $0 + tokens($1) }
    var out: [[Int]] = [], start = 0, acc = 0
    for (i, e) in examples.enumerated() {
        acc += tokens(e)
        let remainingParts = parts - out.count - 1
        // Close the part once it holds its share, leaving at least one example per later part.
        if remainingParts > 0 && (acc * parts >= total * (out.count + 1) || examples.count - i - 1 == remainingParts) {
            out.append(Array(examples[start...i]))
            start = i + 1
        }
    }
    out.append(Array(examples[start...]))
    return out
}

/// Forward and backward of one batch run as micro-batches on the pool's threads
/// (`MicroBatches.run`). `loss(part)` is a part's mean loss; each is weighted by its share of the
/// examples, so the gradients are those of the whole batch's mean loss (up to float summation
/// order). Returns that mean loss.
public func microBatchedBackward(_ parts: [[Int]], loss: ([Int]) -> Tensor) -> Float {
    let total = parts.reduce(0) { $0 + $1.count }
    var losses = [Float](repeating: 0, count: parts.count)
    losses.withUnsafeMutableBufferPointer { out in
        MicroBatches.run(parts.count) { i in
            let weighted = loss(parts[i]) * (Float(parts[i].count) / Float(total))
            weighted.backward()
            out[i] = weighted.item()
        }
    }
    return losses.reduce(0, +)
}
