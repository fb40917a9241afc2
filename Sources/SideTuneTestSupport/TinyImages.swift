import SideTuneBackbones
import SideTuneEngine

/// A tiny random DINOv2-style ViT for method tests: width 16, 2 blocks, 2 heads, MLP 32, patch 2,
/// a 3 x 3 position grid (6 x 6 images: 9 patches + CLS = 10 tokens).
/// `width` 64 (MLP 128) gives rows NF4 can store; `layers` 12 runs HST's paper-shaped side network.
public func tinyViT(seed: UInt64 = 1, width: Int = 16, layers: Int = 2) -> DINOv2ViT {
    var c = ViTConfig()
    c.hiddenSize = width
    c.layers = layers
    c.heads = 2
    c.mlpSize = 2 * width
    c.patchSize = 2
    c.positionGrid = 3
    return DINOv2ViT(config: c, seed: seed)
}

/// A tiny 3-class image task: image k is of class k % 3, shown by a bright 2 x 2 block in colour
/// channel k % 3 (at a random place) over noise. Content, not place, decides the class: a random
/// ViT's position embeddings are tiny, and pooled tokens forget where things were. Pixels
/// [n, 3, 6, 6] and labels.
public func tinyImageTask(count n: Int = 12, seed: UInt64 = 7) -> (pixels: Tensor, labels: [Int32]) {
    var rng = SplitMix64(seed: seed)
    let t = Tensor(shape: [n, 3, 6, 6])
    var labels: [Int32] = []
    for i in 0..<n {
        let k = i % 3
        labels.append(Int32(k))
        let (by, bx) = (rng.nextInt(below: 3), rng.nextInt(below: 3))
        for c in 0..<3 {
            for y in 0..<6 {
                for x in 0..<6 {
                    let inBlock = c == k && y / 2 == by && x / 2 == bx
                    t.data[((i * 3 + c) * 6 + y) * 6 + x] = rng.nextNormal() * 0.3 + (inBlock ? 2 : 0)
                }
            }
        }
    }
    return (t, labels)
}

/// Rows `indices` of a [n, ...] tensor as a new tensor (a batch of a tiny image task).
public func rows(_ t: Tensor, _ indices: [Int]) -> Tensor {
    let per = t.count / t.shape[0]
    let out = Tensor(shape: [indices.count] + Array(t.shape.dropFirst()))
    for (r, i) in indices.enumerated() { (out.data + r * per).update(from: t.data + i * per, count: per) }
    return out
}
