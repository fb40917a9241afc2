import SideTuneBackbones
import SideTuneEngine
import SideTuneTokenizers

/// A tiny random BERT (width 16, 2 layers, 2 heads) so method tests run in milliseconds.
public func tinyBackbone(seed: UInt64 = 1) -> BertEncoder {
    let c = BertConfig(hiddenSize: 16, numHiddenLayers: 2, numAttentionHeads: 2, intermediateSize: 32, vocabSize: 40,
                       maxPositionEmbeddings: 16)
    let enc = BertEncoder(config: c)
    var rng = SplitMix64(seed: seed)
    for (name, p) in enc.namedParameters() {
        if name.hasSuffix("layerNorm.weight") || name.hasSuffix("Norm.weight") {
            p.data.initialize(repeating: 1, count: p.count)
        } else {
            for i in 0..<p.count { p.data[i] = rng.nextNormal() * 0.2 }
        }
    }
    return enc
}

/// A batch of 4 sequences of length 6 with padding in two of them.
public func tinyBatch(seed: UInt64 = 2) -> BatchEncoding {
    var rng = SplitMix64(seed: seed)
    let lengths = [6, 4, 6, 3]
    var ids: [Int32] = [], mask: [Int32] = []
    for l in lengths {
        for j in 0..<6 {
            ids.append(j < l ? Int32(1 + rng.nextInt(below: 39)) : 0)
            mask.append(j < l ? 1 : 0)
        }
    }
    return BatchEncoding(ids: ids, attentionMask: mask, typeIds: [Int32](repeating: 0, count: 24), batchSize: 4, seqLength: 6,
                         lengths: lengths)
}

